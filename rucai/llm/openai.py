"""OpenAI-compatible server backend (`llm=openai`): `vllm serve`, llama.cpp's server, OpenAI...

Chat prompts go to /v1/chat/completions, raw strings to /v1/completions. Requests run in a
thread pool (`max_concurrency`), each retried with exponential backoff on connection errors,
timeouts, 429 and 5xx. base_url / api_key come from the config, else OPENAI_BASE_URL /
OPENAI_API_KEY. min_p, top_k and repetition_penalty are sent in `extra_body` (vLLM and llama.cpp read them there).

n samples: by default (`split_n: true`) each sample is its own request with seed `seed + i*n + j`
and n=1, which works on servers without `n` support and gives exact per-sample token counts from
`usage`. With `split_n: false` one request asks for n choices and `usage.completion_tokens` is
split over the choices in proportion to their text length (an estimate).
"""

from __future__ import annotations

import logging
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from rucai.errors import UserError
from rucai.llm.base import LLM, Completion, RequestOutput, SamplingParams, candidate_variants, logsumexp

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"


def request_kwargs(sp: SamplingParams, n: int, seed: int | None) -> dict[str, Any]:
    """SamplingParams -> arguments shared by chat.completions.create and completions.create."""
    kw: dict[str, Any] = dict(max_tokens=int(sp.max_tokens), n=int(n))
    kw["temperature"] = float(sp.temperature)
    if not sp.greedy:
        kw["top_p"] = float(sp.top_p)
    if seed is not None:
        kw["seed"] = int(seed)
    if sp.stop:
        kw["stop"] = list(sp.stop)
    extra: dict[str, Any] = {}
    if sp.min_p > 0 and not sp.greedy:
        extra["min_p"] = float(sp.min_p)
    if sp.top_k and sp.top_k > 0 and not sp.greedy:
        extra["top_k"] = int(sp.top_k)
    if sp.repetition_penalty != 1:  # not in OpenAI's API; vLLM and llama.cpp servers read it here
        extra["repetition_penalty"] = float(sp.repetition_penalty)
    if extra:
        kw["extra_body"] = extra
    return kw


TOP_LOGPROBS = 20  # the most OpenAI's API (and vLLM's default max_logprobs) returns per position


def top_logprobs_of(resp: Any, chat: bool) -> dict[str, float]:
    """The first generated position's top log-probabilities {token string: logprob} from a chat
    (`choices[0].logprobs.content[0].top_logprobs`, a list of {token, logprob}) or completions
    (`choices[0].logprobs.top_logprobs[0]`, a {token: logprob} mapping) response. A token string that
    appears twice (two ids decoding alike) keeps its larger value."""
    lp = getattr(resp.choices[0], "logprobs", None) if getattr(resp, "choices", None) else None
    if chat:
        content = getattr(lp, "content", None) or []
        pairs = [(e.token, e.logprob) for e in (getattr(content[0], "top_logprobs", None) or [])] if content else []
    else:
        tops = getattr(lp, "top_logprobs", None) or []
        pairs = list((tops[0] or {}).items()) if tops else []
    if not pairs:
        raise UserError("the server returned no top log-probabilities (it must support logprobs); use llm=hf")
    out: dict[str, float] = {}
    for tok, v in pairs:
        out[str(tok)] = max(float(v), out.get(str(tok), -float("inf")))
    return out


def candidate_scores(top: dict[str, float], candidates: list[str]) -> dict[str, float]:
    """Per candidate, the log-sum-exp over its variants (base.candidate_variants) found as token strings
    in `top`; a variant not in the top list counts as probability 0 (-inf)."""
    return {c: logsumexp([top[v] for v in candidate_variants(c) if v in top]) for c in candidates}


def _one_line(x: Any) -> str:
    return " ".join(str(x).split())[:300]


class OpenAILLM(LLM):
    """Client for an OpenAI-compatible server.

    model: the served model name; null asks the server (`GET /models`, first entry).
    base_url / api_key: default to $OPENAI_BASE_URL / $OPENAI_API_KEY (then 127.0.0.1:8000/v1, "EMPTY").
    max_concurrency: parallel requests. timeout_s: per request. max_retries / retry_backoff_s:
        retries with exponential backoff (+ jitter) for connection errors, timeouts, 429 and 5xx.
    extra_body: sent with every request (e.g. {chat_template_kwargs: {enable_thinking: false}}).
    """

    backend = "openai"

    def __init__(self, model: str | None = None, base_url: str | None = None, api_key: str | None = None,
                 max_concurrency: int = 16, timeout_s: float = 600.0, max_retries: int = 3,
                 retry_backoff_s: float = 1.0, split_n: bool = True, extra_body: dict | None = None,
                 sampling: Any = None, system_prompt: str | None = None, chat_template: str | None = None,
                 hardware: Any = None) -> None:
        super().__init__(sampling=sampling, system_prompt=system_prompt, chat_template=chat_template)
        import openai

        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self.max_concurrency = max(1, int(max_concurrency))
        self.max_retries = max(0, int(max_retries))
        self.retry_backoff_s = float(retry_backoff_s)
        self.split_n = bool(split_n)
        self.extra_body = dict(extra_body or {})
        self._openai = openai
        # retries are ours (visible, configurable); the client's own are off
        self.client = openai.OpenAI(base_url=self.base_url, api_key=self.api_key, timeout=float(timeout_s),
                                    max_retries=0)
        self._model = model

    @property
    def model(self) -> str:
        if self._model is None:
            models = self._call(lambda: self.client.models.list())
            data = list(getattr(models, "data", []) or [])
            if not data:
                raise UserError(f"the server at {self.base_url} lists no models; set llm.model")
            self._model = data[0].id
        return self._model

    def _call(self, fn: Any) -> Any:
        """Run one API call with retries; turn final failures into one UserError line."""
        oa = self._openai
        for attempt in range(self.max_retries + 1):
            try:
                return fn()
            except (oa.APIConnectionError, oa.RateLimitError, oa.InternalServerError) as e:
                # APITimeoutError is an APIConnectionError
                if attempt == self.max_retries:
                    if isinstance(e, oa.APIConnectionError):
                        kind = "timed out" if isinstance(e, oa.APITimeoutError) else "cannot be reached"
                        raise UserError(
                            f"OpenAI-compatible server at {self.base_url} {kind} after {attempt + 1} tries "
                            f"(start one, e.g. `bash scripts/llm-server.sh start`, or set llm.base_url / "
                            f"OPENAI_BASE_URL)") from None
                    raise UserError(f"server at {self.base_url} failed after {attempt + 1} tries: "
                                    f"{_one_line(e)}") from None
                delay = self.retry_backoff_s * (2 ** attempt) * (1 + 0.25 * random.random())
                log.warning("LLM request failed (%s); retry %d/%d in %.1fs", type(e).__name__, attempt + 1,
                            self.max_retries, delay)
                time.sleep(delay)
            except oa.APIStatusError as e:  # 4xx: our request is wrong, retrying won't help
                raise UserError(f"server at {self.base_url} rejected the request ({e.status_code}): "
                                f"{_one_line(e.message)}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _request(self, prompt: str | list[dict], sp: SamplingParams, n: int, seed: int | None
                 ) -> tuple[int, list[Completion]]:
        kw = request_kwargs(sp, n, seed)
        extra = self.extra_body | kw.pop("extra_body", {})
        if extra:
            kw["extra_body"] = extra
        model = self.model
        if isinstance(prompt, str):
            resp = self._call(lambda: self.client.completions.create(model=model, prompt=prompt, **kw))
            texts = [(c.text or "", c.finish_reason or "stop") for c in resp.choices]
        else:
            resp = self._call(lambda: self.client.chat.completions.create(model=model, messages=prompt, **kw))
            texts = [(c.message.content or "", c.finish_reason or "stop") for c in resp.choices]
        usage = getattr(resp, "usage", None)
        prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        total = int(getattr(usage, "completion_tokens", 0) or 0)
        if len(texts) == 1:
            counts = [total]
        else:  # usage is per request: apportion over the choices by text length (estimate)
            lengths = [max(1, len(t)) for t, _ in texts]
            counts = [round(total * n_ / sum(lengths)) for n_ in lengths]
        return prompt_tokens, [Completion(t, c, r) for (t, r), c in zip(texts, counts, strict=True)]

    def _generate(self, prompts: list[str | list[dict]], sampling: SamplingParams) -> list[RequestOutput]:
        n = int(sampling.n)
        base = sampling.seed

        def seed_for(i: int, j: int) -> int | None:
            return None if base is None else int(base) + i * n + j

        if self.split_n and n > 1:
            jobs = [(i, j) for i in range(len(prompts)) for j in range(n)]
            run = lambda ij: self._request(prompts[ij[0]], sampling, 1, seed_for(*ij))  # noqa: E731
        else:
            jobs = [(i, 0) for i in range(len(prompts))]
            run = lambda ij: self._request(prompts[ij[0]], sampling, n, seed_for(ij[0], 0))  # noqa: E731
        _ = self.model  # resolve the model name once, before the threads start
        pool = ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(jobs)))
        try:
            futures = [pool.submit(run, ij) for ij in jobs]
            results = [f.result() for f in futures]
        finally:  # on the first failure, drop the requests not yet started
            pool.shutdown(wait=True, cancel_futures=True)
        outs = [RequestOutput(index=i, prompt_tokens=0) for i in range(len(prompts))]
        for (i, _j), (ptoks, comps) in zip(jobs, results, strict=True):
            outs[i].prompt_tokens = ptoks
            outs[i].completions.extend(comps)
        return outs

    def _top_logprobs(self, prompt: str | list[dict]) -> dict[str, float]:
        kw: dict[str, Any] = dict(max_tokens=1, temperature=0.0)
        if self.extra_body:
            kw["extra_body"] = dict(self.extra_body)
        model = self.model
        if isinstance(prompt, str):
            resp = self._call(lambda: self.client.completions.create(model=model, prompt=prompt,
                                                                     logprobs=TOP_LOGPROBS, **kw))
        else:
            resp = self._call(lambda: self.client.chat.completions.create(
                model=model, messages=prompt, logprobs=True, top_logprobs=TOP_LOGPROBS, **kw))
        return top_logprobs_of(resp, chat=not isinstance(prompt, str))

    def _next_token_logprobs(self, prompts: list[str | list[dict]], candidates: list[str]
                             ) -> list[dict[str, float]]:
        """One 1-token request per prompt asking for the top TOP_LOGPROBS (20) log-probabilities of the first
        position; a candidate's value is the log-sum-exp over its variants ("Yes", " Yes") found as token
        strings there, -inf when none is. Exact only when each variant is a single token and in the server's
        top 20 (the server's tokenizer is not visible here, so a variant is matched by its whole text)."""
        _ = self.model
        pool = ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(prompts)))
        try:
            tops = list(pool.map(self._top_logprobs, prompts))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return [candidate_scores(top, candidates) for top in tops]

    def close(self) -> None:
        self.client.close()
