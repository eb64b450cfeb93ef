"""Hydra launchers on top of hydra-submitit-launcher, with failures reported, not lost.

`SlurmLauncher` (used by `cluster=slurm`, config `hydra/launcher=rucai_slurm`) and
`LocalLauncher` (`hydra/launcher=rucai_local`) submit a sweep as a submitit job array and then
collect every job: a job that fails, is killed (SIGKILL, OOM) or times out is recorded in its own
output directory (`metrics.json` with `status: failed`) and in `<sweep>/failed_jobs.json`, the
other jobs' results are kept, and the sweep ends with one line per failure and a non-zero exit.
A submission that the cluster refuses (more memory than a node has, GPUs on a CPU partition)
ends in one line naming sbatch's reason.

Requeue ownership: submitit. On a time limit or pre-emption SLURM signals the job (USR2,
`signal_delay_s` before the limit); submitit calls the launcher's `checkpoint()`, which resubmits
the same job with the same arguments, so it reruns in the same output directory; `cluster=slurm`
sets `ckpt_path=last`, so each stage resumes from its own last checkpoint (saved on that signal,
mid-epoch too).
Lightning's own SLURM auto-requeue is switched off (`rucai.runtime.hardware.trainer_kwargs`).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
from omegaconf import OmegaConf

from rucai.utils.io import atomic_write_json

log = logging.getLogger(__name__)


def _reason(e: BaseException) -> str:
    """The most telling single line of a submitit/sbatch error."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    for key in ("sbatch: error:", "error:", "Error", "srun: error:"):
        hits = [ln for ln in lines if key in ln and "Traceback" not in ln]
        if hits:
            return hits[-1]
    return lines[-1] if lines else type(e).__name__


class _CollectingLauncher(BaseSubmititLauncher):
    def _executor(self):
        import submitit

        params = dict(self.params)
        if self._EXECUTOR == "slurm" and self.config is not None and "slurm" in self.config:
            # list/dict settings cannot be interpolated into the launcher's typed config
            slurm = OmegaConf.to_container(self.config.slurm, resolve=True)
            params["setup"] = list(params.get("setup") or []) + list(slurm.get("setup") or [])
            params["additional_parameters"] = dict(params.get("additional_parameters") or {}) | dict(
                slurm.get("additional_parameters") or {})
        init = {"folder": params.pop("submitit_folder")}
        if "max_num_timeout" in params:
            init[f"{self._EXECUTOR}_max_num_timeout"] = params.pop("max_num_timeout")
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init)
        shared = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in shared else f"{self._EXECUTOR}_{k}": v for k, v in params.items()})
        return executor

    def launch(self, job_overrides, initial_job_idx: int):
        assert self.config is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info("submitit %s sweep -> %s", self._EXECUTOR, sweep_dir)
        args = []
        for i, overrides in enumerate(job_overrides):
            idx = initial_job_idx + i
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
            args.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
        try:
            jobs = self._executor().map_array(self, *zip(*args, strict=True))
        except Exception as e:
            reason = _reason(e)
            asked = {k: self.params.get(k) for k in ("partition", "nodes", "tasks_per_node", "cpus_per_task",
                                                      "mem_gb", "gpus_per_node", "timeout_min")
                     if self.params.get(k) is not None}
            reason += " (asked for " + ", ".join(f"{k}={v}" for k, v in asked.items()) + ")"
            atomic_write_json(sweep_dir / "failed_jobs.json", {
                "stage": "submission", "error": reason,
                "jobs": [{"num": a[2], "overrides": a[0]} for a in args]})
            print(f"error: the cluster refused the sweep: {reason}; change slurm.* / hardware.* settings",
                  file=sys.stderr)
            sys.exit(2)

        results: list[JobReturn] = []
        failed = []
        for (overrides, _, idx, _, _), job in zip(args, jobs, strict=True):
            try:
                ret = job.results()[0]
                if ret.status != JobStatus.FAILED:
                    results.append(ret)
                    continue
                error: BaseException = ret._return_value  # the task raised; Hydra kept the exception
                reason, state = f"{type(error).__name__}: {error}".splitlines()[0], "TASK_FAILED"
            except Exception as e:  # FailedJobError, UncompletedJobError (killed, OOM, timeout)
                error, reason, state = e, _reason(e), getattr(job, "state", "?")
            failed.append({"num": idx, "job_id": job.job_id, "state": state, "error": reason,
                           "overrides": overrides})
            self._record_failure(sweep_dir / str(idx), reason, state, job.job_id)
            ret = JobReturn(overrides=overrides, status=JobStatus.FAILED)
            ret._return_value = error
            results.append(ret)
        if failed:
            atomic_write_json(sweep_dir / "failed_jobs.json", {"stage": "run", "jobs": failed})
            for f in failed:
                print(f"error: job #{f['num']} ({f['job_id']}, {f['state']}) failed: {f['error']}", file=sys.stderr)
            print(f"error: {len(failed)} of {len(jobs)} jobs failed; the others' results are in {sweep_dir} "
                  f"(python -m rucai.results {sweep_dir})", file=sys.stderr)
            sys.exit(1)
        return results

    @staticmethod
    def _record_failure(job_dir: Path, reason: str, state: str, job_id: str) -> None:
        """Add the cluster's view to the job's `metrics.json`. The dispatcher writes that record for
        every run that ends in Python (status failed/interrupted, its own error line, metrics so far):
        its status and error are kept; a job killed before it could write (SIGKILL, OOM, node lost)
        gets a record here, status failed, with the launcher's reason."""
        mfile = job_dir / "metrics.json"
        metrics: dict[str, Any] = {}
        if mfile.is_file():
            try:
                metrics = json.loads(mfile.read_text())
            except json.JSONDecodeError:
                metrics = {}
        if metrics.get("status") == "completed":
            return
        status = metrics.get("status") if metrics.get("status") in ("failed", "interrupted") else "failed"
        metrics |= {"status": status, "error": metrics.get("error") or reason, "slurm_state": state,
                    "job_id": job_id, "failed_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        atomic_write_json(mfile, metrics)


class SlurmLauncher(_CollectingLauncher):
    _EXECUTOR = "slurm"


class LocalLauncher(_CollectingLauncher):
    _EXECUTOR = "local"

