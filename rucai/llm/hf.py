"""transformers backend (`llm=hf`): batched generation with a causal LM on CPU or one GPU.

Prompts are sorted by length and generated `batch_size` at a time with LEFT padding; the
sampling settings map onto `generate()` (do_sample when temperature > 0, num_return_sequences
for n, `stop_strings` + post-hoc truncation for stop). A call with `seed` forks and seeds the
torch RNG, so the same call gives the same outputs. Token counts come from the generated ids:
up to and including the first EOS, or up to the token that completed a stop string.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from rucai.errors import UserError
from rucai.llm import models
from rucai.llm.base import (
    LLM,
    Completion,
    RequestOutput,
    SamplingParams,
    candidate_token_ids,
    hw_get,
    logsumexp,
)

log = logging.getLogger(__name__)


def gen_kwargs(sp: SamplingParams, max_new_tokens: int) -> dict[str, Any]:
    """SamplingParams -> keyword arguments of `transformers` `generate()` (no tokenizer/stop)."""
    penalty = {"repetition_penalty": float(sp.repetition_penalty)} if sp.repetition_penalty != 1 else {}
    if sp.greedy:
        return dict(do_sample=False, max_new_tokens=max_new_tokens, num_return_sequences=1,
                    temperature=None, top_p=None, top_k=None, min_p=None, **penalty)
    return dict(
        do_sample=True,
        max_new_tokens=max_new_tokens,
        num_return_sequences=int(sp.n),
        temperature=float(sp.temperature),
        top_p=float(sp.top_p),
        top_k=int(sp.top_k) if sp.top_k and sp.top_k > 0 else 0,  # 0: off (HF's default is 50)
        min_p=float(sp.min_p) if sp.min_p > 0 else None,
        **penalty,
    )


PREFIX_MIN_TOKENS = 32  # scoring batches whose prompts share at least this many leading tokens run them once


def _common_prefix_len(rows: list[list[int]], cap: int) -> int:
    """Length of the longest token prefix every row shares, at most `cap`."""
    first, n = rows[0], 0
    while n < cap and all(r[n] == first[n] for r in rows[1:]):
        n += 1
    return n


class HFLLM(LLM):
    """A transformers causal LM.

    model: local folder, HF id (offline: must be in the HF cache), a `.gguf` file, or an alias
        from `rucai.llm.models.ALIASES` (e.g. `smollm2-135m-instruct`); or a loaded model object.
    tokenizer: like `model` (default: the model's own), or a tokenizer object.
    gguf_file: GGUF file name inside the `model` folder.
    convert_gguf: convert a GGUF once into a cached HF folder (`cache_dir`) and load that (fast);
        False loads the GGUF directly every time (de-quantisation takes ~10-60 s).
    device: auto | cpu | cuda | cuda:N (ignored when hardware.device_map places the model). dtype: auto
        (the hardware profile's precision: bf16 on a GPU unless it says 32-bit, fp32 on CPU) | float32 | bfloat16 | float16.
    max_model_len: prompt + generation limit (default: the model's max_position_embeddings).
    """

    backend = "hf"

    def __init__(self, model: Any, tokenizer: Any = None, gguf_file: str | None = None, batch_size: int = 8,
                 device: str = "auto", dtype: str = "auto", max_model_len: int | None = None,
                 convert_gguf: bool = True, cache_dir: str | None = None, trust_remote_code: bool = False,
                 sampling: Any = None, system_prompt: str | None = None, chat_template: str | None = None,
                 hardware: Any = None) -> None:
        super().__init__(sampling=sampling, system_prompt=system_prompt, chat_template=chat_template)
        import torch

        if int(batch_size) < 1:
            raise UserError(f"llm.batch_size={batch_size} must be >= 1")
        self.batch_size = int(batch_size)
        self.prefix_min_tokens = PREFIX_MIN_TOKENS  # scoring: shared prefixes this long run once
        self.device = self._pick_device(device, hardware)
        self.model, self.tokenizer = self._load(model, tokenizer, gguf_file, dtype, convert_gguf, cache_dir,
                                                trust_remote_code, hardware)
        if getattr(self.model, "hf_device_map", None):  # placed by from_pretrained (hardware.device_map)
            self.device = str(self.model.device)  # inputs go where the embeddings are
        else:
            self.model.to(self.device)
        self.model.eval()
        tok = self.tokenizer
        tok.padding_side = "left"
        if chat_template:
            tok.chat_template = chat_template
        gc = self.model.generation_config
        eos = gc.eos_token_id if gc.eos_token_id is not None else tok.eos_token_id
        self.eos_ids: set[int] = set(eos if isinstance(eos, list | tuple) else [eos]) - {None}
        if tok.pad_token_id is None:
            if tok.eos_token is None:
                raise UserError("the tokenizer has neither a pad nor an eos token; cannot pad batches")
            tok.pad_token = tok.eos_token
        self.pad_id: int = tok.pad_token_id
        self.max_model_len = int(max_model_len or getattr(self.model.config, "max_position_embeddings", 0)
                                 or 1 << 30)
        self._torch = torch

    # ---- loading ------------------------------------------------------------------------------

    @staticmethod
    def _pick_device(device: str, hardware: Any) -> str:
        import torch

        device = str(device or "auto")
        if device == "auto":
            wants_cpu = hw_get(hardware, "accelerator") == "cpu"
            return "cuda" if torch.cuda.is_available() and not wants_cpu else "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise UserError(f"llm.device={device} but no CUDA GPU is visible (use llm.device=cpu)")
        return device

    def _load(self, model: Any, tokenizer: Any, gguf_file: str | None, dtype: str, convert_gguf: bool,
              cache_dir: str | None, trust_remote_code: bool, hardware: Any = None) -> tuple[Any, Any]:
        """Through `rucai.runtime.load_causal_lm`: `hardware.device_map` (+ max_memory, offload_folder)
        when the profile sets one, else the chosen device; dtype `auto` follows the profile's precision
        (bf16 on a GPU unless the profile says 32-bit, fp32 on CPU)."""
        from rucai.runtime import load_causal_lm, load_tokenizer

        if not isinstance(model, str | os.PathLike):  # a loaded model object
            if tokenizer is None or isinstance(tokenizer, str | os.PathLike):
                raise UserError("HFLLM(model=<object>) also needs tokenizer=<tokenizer object>")
            return model, tokenizer
        path, gguf = models.resolve(str(model))
        gguf = gguf_file or gguf
        load_kw: dict[str, Any] = {}
        if gguf and convert_gguf:
            path, gguf = str(models.gguf_to_hf(path, gguf, cache_dir=cache_dir)), None
        elif gguf:
            load_kw["gguf_file"] = gguf
        if tokenizer is None or isinstance(tokenizer, str | os.PathLike):
            tokenizer = load_tokenizer(str(tokenizer or path), trust_remote_code=trust_remote_code, **load_kw)
        lm = load_causal_lm(path, hardware, dtype=dtype, device=self.device, trust_remote_code=trust_remote_code,
                            **load_kw)
        return lm, tokenizer

    # ---- generation ---------------------------------------------------------------------------

    def encode(self, prompt: str | list[dict]) -> list[int]:
        tok = self.tokenizer
        if isinstance(prompt, str):
            return tok(prompt, add_special_tokens=True)["input_ids"]
        if not tok.chat_template:
            raise UserError("this tokenizer has no chat template: set llm.chat_template or pass raw strings")
        text = tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        # the template already writes BOS where the model wants it
        return tok(text, add_special_tokens=False)["input_ids"]

    def _generate(self, prompts: list[str | list[dict]], sampling: SamplingParams) -> list[RequestOutput]:
        torch = self._torch
        encoded = [self.encode(p) for p in prompts]
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))  # longest first: less padding
        results: dict[int, RequestOutput] = {}
        devices = [torch.device(self.device)] if self.device.startswith("cuda") else []
        with torch.random.fork_rng(devices=devices, enabled=sampling.seed is not None):
            if sampling.seed is not None:
                torch.manual_seed(int(sampling.seed))
            for start in range(0, len(order), self.batch_size):
                idx = order[start:start + self.batch_size]
                for i, out in zip(idx, self._generate_batch([encoded[i] for i in idx], sampling), strict=True):
                    results[i] = out
        return [results[i] for i in range(len(prompts))]

    def _generate_batch(self, batch: list[list[int]], sp: SamplingParams) -> list[RequestOutput]:
        torch = self._torch
        width = max(len(ids) for ids in batch)
        max_new = min(int(sp.max_tokens), self.max_model_len - width)
        if max_new < 1:
            raise UserError(f"a prompt has {width} tokens, at or over llm.max_model_len={self.max_model_len}")
        input_ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for r, ids in enumerate(batch):
            if ids:
                input_ids[r, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
                attention[r, width - len(ids):] = 1
        kwargs = gen_kwargs(sp, max_new)
        if sp.stop:
            kwargs.update(stop_strings=list(sp.stop), tokenizer=self.tokenizer)
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device),
                pad_token_id=self.pad_id, eos_token_id=sorted(self.eos_ids) or None, **kwargs,
            )
        gen = out[:, width:].tolist()
        per_row = 1 if sp.greedy else int(sp.n)
        outputs = []
        for r, ids in enumerate(batch):
            comps = [self._completion(gen[r * per_row + j], sp.stop) for j in range(per_row)]
            if sp.greedy and sp.n > 1:  # greedy: the n samples are identical
                comps = [Completion(c.text, c.num_tokens, c.finish_reason) for c in comps * int(sp.n)]
            outputs.append(RequestOutput(index=-1, prompt_tokens=len(ids), completions=comps))
        return outputs

    def _completion(self, ids: list[int], stop: list[str] | None) -> Completion:
        end, ended_by = len(ids), None
        for k, t in enumerate(ids):
            if t in self.eos_ids:
                end, ended_by = k, "eos"
                break
            if t == self.pad_id:  # padding after a row finished (stop string) when pad != eos
                end, ended_by = k, "pad"
                break
        body = ids[:end]
        text = self._decode(body)
        if stop:
            cut = min((p for p in (text.find(s) for s in stop) if p >= 0), default=-1)
            if cut >= 0:
                return Completion(text[:cut], self._tokens_until_stop(body, stop), "stop")
        if ended_by == "eos":
            return Completion(text, end + 1, "stop")
        return Completion(text, end, "stop" if ended_by else "length")

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def _tokens_until_stop(self, body: list[int], stop: list[str]) -> int:
        """Smallest k such that the first k generated tokens already contain a stop string."""
        lo, hi = 1, len(body)
        while lo < hi:
            mid = (lo + hi) // 2
            text = self._decode(body[:mid])
            if any(s in text for s in stop):
                hi = mid
            else:
                lo = mid + 1
        return hi

    # ---- scoring ------------------------------------------------------------------------------

    def _next_token_logprobs(self, prompts: list[str | list[dict]], candidates: list[str]
                             ) -> list[dict[str, float]]:
        """One forward pass per batch (`batch_size` prompts, longest first; rows that share a long prefix run
        it once, `_last_logits_shared_prefix`); log_softmax in fp32 of each row's last-position logits; the
        candidates' first-token ids (base.candidate_token_ids) gathered from it."""
        torch = self._torch
        cand_ids = candidate_token_ids(
            lambda s: self.tokenizer(s, add_special_tokens=False)["input_ids"], candidates)
        flat = sorted({t for ids in cand_ids for t in ids})
        col = {t: j for j, t in enumerate(flat)}
        encoded = [self.encode(p) for p in prompts]
        for ids in encoded:
            if not ids:
                raise UserError("a prompt encodes to no tokens: nothing to condition the next token on")
            if len(ids) > self.max_model_len:
                raise UserError(f"a prompt has {len(ids)} tokens, over llm.max_model_len={self.max_model_len}")
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        rows: dict[int, list[float]] = {}
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            batch = [encoded[i] for i in idx]
            shared = _common_prefix_len(batch, cap=min(map(len, batch)) - 1)  # every row keeps >= 1 own token
            with torch.inference_mode():
                if len(batch) > 1 and shared >= self.prefix_min_tokens:
                    logits = self._last_logits_shared_prefix(batch, shared)
                else:
                    logits = self._last_logits(batch)
                logp = logits.float().log_softmax(-1)[:, flat].cpu().tolist()
            for r, i in enumerate(idx):
                rows[i] = logp[r]
        return [{c: logsumexp([rows[i][col[t]] for t in ids]) for c, ids in zip(candidates, cand_ids, strict=True)}
                for i in range(len(prompts))]

    def _last_logits(self, batch: list[list[int]]):
        """[rows, vocab] logits at each row's last token: LEFT padding, position ids counted from each row's
        first real token (as `generate` does), only the last position's logits computed when the model can."""
        import inspect

        torch = self._torch
        width = max(map(len, batch))
        input_ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for r, ids in enumerate(batch):
            input_ids[r, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
            attention[r, width - len(ids):] = 1
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        kw = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(self.model.forward).parameters else {}
        return self.model(input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device),
                          position_ids=positions.to(self.device), use_cache=False, **kw).logits[:, -1, :]

    def _last_logits_shared_prefix(self, batch: list[list[int]], shared: int):
        """As `_last_logits` for rows that start with the same `shared` tokens (a scoring call's dialogue):
        the prefix runs once, its KV cache is repeated for the rows, and only each row's own suffix runs
        on top of it (RIGHT padded; each row's logits read at its last real token). Same result up to
        float rounding (tested against `_last_logits`); the cost of the prefix is paid once, not per row."""
        torch = self._torch
        n = len(batch)
        import inspect

        prefix = torch.tensor([batch[0][:shared]], dtype=torch.long, device=self.device)
        out = self.model(input_ids=prefix, use_cache=True)
        cache = getattr(out, "cache", None) or out.past_key_values
        cache.batch_repeat_interleave(n)
        tails = [ids[shared:] for ids in batch]
        width = max(map(len, tails))
        input_ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((n, shared + width), dtype=torch.long)
        attention[:, :shared] = 1
        for r, t in enumerate(tails):
            input_ids[r, :len(t)] = torch.tensor(t, dtype=torch.long)
            attention[r, shared:shared + len(t)] = 1
        positions = torch.arange(shared, shared + width).expand(n, width)
        name = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"
        logits = self.model(input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device),
                            position_ids=positions.to(self.device), use_cache=True, **{name: cache}).logits
        last = torch.tensor([len(t) - 1 for t in tails], device=logits.device)
        return logits[torch.arange(n, device=logits.device), last]

    def close(self) -> None:
        self.model = None
        if self.device.startswith("cuda"):
            self._torch.cuda.empty_cache()
