"""The generation interface shared by every backend (hf, vllm, openai).

A prompt is either a raw string (sent as is) or a list of chat messages
``[{"role": ..., "content": ...}]`` to which the backend applies the model's chat template.
Only dataclasses and the abstract class live here: importing it pulls in no torch/transformers.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rucai.errors import UserError

Message = Mapping[str, str]
Prompt = str | Sequence[Message]


@dataclass
class SamplingParams:
    """Sampling settings, vLLM-style. temperature == 0 means greedy decoding."""

    temperature: float = 0.6
    top_p: float = 0.95
    min_p: float = 0.0
    top_k: int = -1  # -1 (or 0): off
    max_tokens: int = 32768
    n: int = 1
    seed: int | None = None
    stop: list[str] | None = None
    repetition_penalty: float = 1.0  # 1.0: off; > 1 divides positive (multiplies negative) logits of every
    # token already in the prompt or the output, as transformers' and vLLM's repetition_penalty

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        elif self.stop is not None:
            self.stop = [str(s) for s in self.stop] or None
        if self.temperature < 0:
            raise UserError(f"sampling.temperature={self.temperature} must be >= 0 (0 = greedy)")
        if not 0 < self.top_p <= 1:
            raise UserError(f"sampling.top_p={self.top_p} must be in (0, 1]")
        if not 0 <= self.min_p <= 1:
            raise UserError(f"sampling.min_p={self.min_p} must be in [0, 1]")
        if not self.repetition_penalty > 0:
            raise UserError(f"sampling.repetition_penalty={self.repetition_penalty} must be > 0 (1.0 = off)")
        if int(self.n) < 1:
            raise UserError(f"sampling.n={self.n} must be >= 1")
        if int(self.max_tokens) < 1:
            raise UserError(f"sampling.max_tokens={self.max_tokens} must be >= 1")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @classmethod
    def from_cfg(cls, cfg: Any = None, **overrides: Any) -> SamplingParams:
        """Build from a config mapping (DictConfig or dict); unknown keys are one UserError line."""
        data = config_dict(cfg)
        data.update({k: v for k, v in overrides.items() if v is not None})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise UserError(f"unknown sampling key(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
        return cls(**data)

    def replace(self, **changes: Any) -> SamplingParams:
        return dataclasses.replace(self, **changes)


@dataclass
class Completion:
    text: str
    num_tokens: int  # generated tokens, including a final EOS, excluding padding
    finish_reason: str  # "stop" (EOS or stop string) | "length" | backend-specific


@dataclass
class RequestOutput:
    index: int  # position of the prompt in the generate() call
    prompt_tokens: int
    completions: list[Completion] = field(default_factory=list)
    prompt_id: Any = None  # caller's id for the prompt (ids=...), else the index

    @property
    def text(self) -> str:
        """The first completion's text (convenience for n == 1)."""
        return self.completions[0].text if self.completions else ""


class LLM(abc.ABC):
    """A text generator. Subclasses implement `_generate` on normalised prompts."""

    backend: str = "?"

    def __init__(self, sampling: SamplingParams | Mapping | None = None, system_prompt: str | None = None,
                 chat_template: str | None = None) -> None:
        self.default_sampling = (sampling if isinstance(sampling, SamplingParams)
                                 else SamplingParams.from_cfg(sampling))
        self.system_prompt = system_prompt
        self.chat_template = chat_template

    def generate(self, prompts: Prompt | Sequence[Prompt], sampling: SamplingParams | Mapping | None = None,
                 ids: Sequence[Any] | None = None) -> list[RequestOutput]:
        """Generate `sampling.n` completions for each prompt; outputs are in prompt order."""
        if isinstance(prompts, str) or _is_chat(prompts):
            prompts = [prompts]  # a single prompt
        prompts = [normalise_prompt(p, self.system_prompt) for p in prompts]
        if sampling is None:
            sp = self.default_sampling
        elif isinstance(sampling, SamplingParams):
            sp = sampling
        else:
            sp = SamplingParams.from_cfg(dataclasses.asdict(self.default_sampling) | config_dict(sampling))
        if ids is not None and len(ids) != len(prompts):
            raise UserError(f"generate() got {len(ids)} ids for {len(prompts)} prompts")
        if not prompts:
            return []
        outs = self._generate(prompts, sp)
        for i, out in enumerate(outs):
            out.index = i
            out.prompt_id = ids[i] if ids is not None else i
        return outs

    @abc.abstractmethod
    def _generate(self, prompts: list[str | list[dict]], sampling: SamplingParams) -> list[RequestOutput]:
        """prompts: raw strings or message lists (system prompt already applied)."""

    def next_token_logprobs(self, prompts: Prompt | Sequence[Prompt], candidates: Sequence[str]
                            ) -> list[dict[str, float]]:
        """For each prompt, the log-probability of each candidate's FIRST token at the next position.

        Scoring, not decoding: one forward pass over each prompt, no sampling settings involved. Prompts
        are normalised as in `generate` (a chat prompt gets the system prompt and the chat template with the
        generation prompt, so it ends where the assistant's answer starts).

        Tokenisation rule (`candidate_variants`, `candidate_token_ids`): a candidate counts in two spellings,
        itself and with one leading space ("Yes" and " Yes"; a candidate that starts with a space: itself and
        itself without it). Each spelling maps to the first token id of its encoding WITHOUT special tokens;
        the candidate's value is the log-sum-exp over its DISTINCT first tokens (a token shared by both
        spellings counts once). Chat models usually answer "Yes" right after the assistant header, raw-text
        prompts ending in a word usually continue with " Yes"; both are covered. Caveat: two candidates with
        the same first token ("Yes", "Yeah" on some tokenizers) get the same value.

        Returns one {candidate: logprob} dict per prompt, in prompt order (-inf: probability 0).
        """
        if isinstance(prompts, str) or _is_chat(prompts):
            prompts = [prompts]
        prompts = [normalise_prompt(p, self.system_prompt) for p in prompts]
        if isinstance(candidates, str):
            raise UserError(f"candidates is a list of strings, got the string {candidates!r} (write [{candidates!r}])")
        cands = list(dict.fromkeys(candidates or []))
        if not cands:
            raise UserError("next_token_logprobs() needs at least one candidate string, e.g. ['Yes', 'No']")
        bad = [c for c in cands if not isinstance(c, str) or not c]
        if bad:
            raise UserError(f"candidates must be non-empty strings, got {bad[0]!r}")
        if not prompts:
            return []
        out = self._next_token_logprobs(prompts, cands)
        if len(out) != len(prompts):  # pragma: no cover - a backend bug
            raise AssertionError(f"{self.backend}: {len(out)} results for {len(prompts)} prompts")
        return out

    def _next_token_logprobs(self, prompts: list[str | list[dict]], candidates: list[str]
                             ) -> list[dict[str, float]]:
        """prompts: normalised; candidates: distinct non-empty strings. Backends that can score override."""
        raise UserError(f"llm backend {self.backend} has no next-token log-probabilities "
                        f"(use llm=hf, llm=vllm or llm=openai)")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free engine resources (GPU memory, server connections)."""

    def __enter__(self) -> LLM:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _is_chat(p: Any) -> bool:
    return isinstance(p, Sequence) and not isinstance(p, str) and len(p) > 0 and all(
        isinstance(m, Mapping) for m in p)


def candidate_variants(candidate: str) -> tuple[str, ...]:
    """The spellings that stand for a candidate: itself, then with one leading space added ("Yes" ->
    ("Yes", " Yes")), or removed when it starts with one (" Yes" -> (" Yes", "Yes"); " " -> (" ",))."""
    alt = candidate[1:] if candidate.startswith(" ") else " " + candidate
    return (candidate, alt) if alt else (candidate,)


def candidate_token_ids(encode: Callable[[str], Sequence[int]], candidates: Sequence[str]) -> list[tuple[int, ...]]:
    """Per candidate, the distinct first token ids of its variants, in variant order. `encode` maps a
    string to token ids WITHOUT special tokens; a variant that encodes to nothing is skipped."""
    out = []
    for c in candidates:
        ids = [list(encode(v)) for v in candidate_variants(c)]
        firsts = tuple(dict.fromkeys(int(x[0]) for x in ids if x))
        if not firsts:
            raise UserError(f"candidate {c!r} encodes to no tokens; use a visible string")
        out.append(firsts)
    return out


def logsumexp(values: Sequence[float]) -> float:
    """log(sum(exp(v))) computed stably; -inf for no values or all -inf."""
    vals = [float(v) for v in values]
    top = max(vals, default=-math.inf)
    if top == -math.inf:
        return -math.inf
    return top + math.log(sum(math.exp(v - top) for v in vals))


def normalise_prompt(p: Any, system_prompt: str | None = None) -> str | list[dict]:
    if isinstance(p, str):
        return p
    if _is_chat(p):
        msgs = []
        for m in p:
            if "role" not in m or "content" not in m:
                raise UserError(f"chat message needs 'role' and 'content' keys, got {sorted(m)}")
            msgs.append({"role": str(m["role"]), "content": str(m["content"])})
        if system_prompt and msgs[0]["role"] != "system":
            msgs.insert(0, {"role": "system", "content": system_prompt})
        return msgs
    raise UserError(f"a prompt is a string or a list of {{role, content}} messages, got {type(p).__name__}")


def config_dict(cfg: Any) -> dict[str, Any]:
    """A config (None, SamplingParams, DictConfig or mapping) as a plain dict."""
    if cfg is None:
        return {}
    if isinstance(cfg, SamplingParams):
        return dataclasses.asdict(cfg)
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            return dict(OmegaConf.to_container(cfg, resolve=True))
    except ImportError:  # pragma: no cover
        pass
    return dict(cfg)


def hw_get(hardware: Any, key: str, default: Any = None) -> Any:
    """Read a key of the hardware profile (DictConfig, dict, dataclass or None)."""
    if hardware is None:
        return default
    if isinstance(hardware, Mapping):
        return hardware.get(key, default)
    try:
        return hardware.get(key, default)  # DictConfig
    except AttributeError:
        return getattr(hardware, key, default)
