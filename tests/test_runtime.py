"""The runtime's pieces by hand: deferred stop signals, the stage record, `ckpt_path` semantics."""

from __future__ import annotations

import os
import signal

import pytest
from omegaconf import OmegaConf

from rucai import runtime
from rucai.errors import UserError
from rucai.runtime.signals import PendingSignals
from rucai.runtime.stages import Stage


def test_pending_signal_waits_for_the_safe_point_then_reaches_the_previous_handler():
    seen = []
    before = signal.signal(signal.SIGUSR2, lambda signum, frame: seen.append(signum))
    try:
        with PendingSignals(("SIGUSR2",)) as sig:
            os.kill(os.getpid(), signal.SIGUSR2)
            assert sig.pending == signal.SIGUSR2 and seen == []  # deferred: nothing ran yet
            sig.forward()  # the safe point: the earlier handler (submitit's, Lightning's) gets it
            assert seen == [signal.SIGUSR2] and sig.pending is None
        os.kill(os.getpid(), signal.SIGUSR2)  # handlers restored after the block
        assert seen == [signal.SIGUSR2, signal.SIGUSR2]
    finally:
        signal.signal(signal.SIGUSR2, before)


def _cfg(tmp_path, ckpt_path=None):
    return OmegaConf.create({"paths": {"output_dir": str(tmp_path)}, "ckpt_path": ckpt_path})


def test_stage_runs_once_then_reuses_its_record(tmp_path):
    calls = []

    def work(stage):
        calls.append(stage.dir)
        (stage.dir / "artefact.txt").write_text("x")
        return {"score": 0.5}

    assert Stage(_cfg(tmp_path), "pretrain").run(work) == {"score": 0.5}
    assert Stage(_cfg(tmp_path), "pretrain").run(work) == {"score": 0.5}
    assert calls == [tmp_path / "pretrain"]  # the second run reused done.json
    assert Stage(_cfg(tmp_path), "pretrain").done() == {"score": 0.5}


def test_interrupted_stage_writes_no_record(tmp_path):
    def boom(stage):
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        Stage(_cfg(tmp_path), "stage1").run(boom)
    assert Stage(_cfg(tmp_path), "stage1").done() is None


def test_resume_checkpoint_follows_ckpt_path(tmp_path):
    st = Stage(_cfg(tmp_path, "last"), "pretrain")
    assert st.resume_checkpoint() is None  # nothing saved yet: a fresh start
    st.ckpt_dir.mkdir(parents=True)
    (st.ckpt_dir / "last.ckpt").write_bytes(b"")
    assert st.resume_checkpoint() == str(st.ckpt_dir / "last.ckpt")
    stale = st.ckpt_dir / "last.ckpt"
    os.utime(stale, (1_000_000, 1_000_000))
    (st.ckpt_dir / "last-v1.ckpt").write_bytes(b"")  # Lightning's versioned name, written later
    assert st.resume_checkpoint() == str(st.ckpt_dir / "last-v1.ckpt")  # the newest, not the stale name
    assert Stage(_cfg(tmp_path, None), "pretrain").resume_checkpoint() is None  # null: never resume
    with pytest.raises(UserError, match="not found"):
        runtime.resume_checkpoint(_cfg(tmp_path, str(tmp_path / "nope.ckpt")), tmp_path)


def test_device_kwargs_honour_the_hardware_profile():
    hw = OmegaConf.create({"device_map": "auto", "max_memory": {"0": "10GiB", "cpu": "20GiB"},
                           "offload_folder": "/tmp/off", "precision": "bf16-true"})
    assert runtime.device_kwargs(hw) == {"device_map": "auto", "max_memory": {0: "10GiB", "cpu": "20GiB"},
                                         "offload_folder": "/tmp/off"}
    assert runtime.device_kwargs(OmegaConf.create({"device_map": None}), device="cpu") == {}
    import torch

    assert runtime.torch_dtype("auto", hw) is torch.bfloat16
    assert runtime.torch_dtype("auto", OmegaConf.create({"precision": "32-true"})) is torch.float32


def test_pending_signal_without_a_previous_handler_exits_through_python():
    """So the dispatcher still writes the run record (status: interrupted) on the way out."""
    before = signal.signal(signal.SIGUSR2, signal.SIG_DFL)
    try:
        sig = PendingSignals(("SIGUSR2",)).install()
        os.kill(os.getpid(), signal.SIGUSR2)
        with pytest.raises(SystemExit) as e:
            sig.forward()
        assert e.value.code == 128 + signal.SIGUSR2
        assert signal.getsignal(signal.SIGUSR2) == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGUSR2, before)


def _tiny_module():
    """A one-weight LightningModule class: squared output as the training loss and as `val/loss`."""
    import lightning as L
    import torch

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Linear(2, 1)

        def training_step(self, batch, _):
            return self.w(batch[0]).pow(2).mean()

        def validation_step(self, batch, _):
            self.log("val/loss", self.w(batch[0]).pow(2).mean())

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    return Tiny


def test_resumed_checkpointing_overwrites_last_ckpt(tmp_path):
    """A run resumed from a signal checkpoint (no ModelCheckpoint state in it) must keep writing
    last.ckpt, not Lightning's versioned last-v1.ckpt beside a stale last.ckpt."""
    from pathlib import Path

    import lightning as L
    import torch
    from hydra.utils import instantiate

    conf = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "callbacks" / "default.yaml")
    conf.model_checkpoint.dirpath = str(tmp_path)
    conf.model_checkpoint.monitor = None
    conf.model_checkpoint.mode = "min"
    ckpt = instantiate(conf.model_checkpoint)
    (tmp_path / "last.ckpt").write_bytes(b"stale")

    Tiny = _tiny_module()

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(4, 2)), batch_size=2)
    L.Trainer(max_epochs=1, callbacks=[ckpt], logger=False, enable_progress_bar=False,
              enable_model_summary=False, default_root_dir=str(tmp_path)).fit(Tiny(), data)
    assert sorted(p.name for p in tmp_path.glob("last*.ckpt")) == ["last.ckpt"]
    assert (tmp_path / "last.ckpt").stat().st_size > 5  # overwritten with the real checkpoint


def test_monitored_run_writes_last_ckpt_every_epoch(tmp_path):
    """With a monitored ModelCheckpoint Lightning writes last.ckpt only in epochs that improved; a run
    resumed with ckpt_path=last would go back to its best epoch. every_epoch_last keeps last.ckpt at the
    newest epoch and the monitored callback's best at the best one."""
    from pathlib import Path

    import lightning as L
    import torch
    from hydra.utils import instantiate

    from rucai.runtime import every_epoch_last

    conf = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "callbacks" / "default.yaml")
    conf.model_checkpoint.dirpath = str(tmp_path)
    conf.model_checkpoint.monitor = "val/loss"
    conf.model_checkpoint.mode = "min"
    cbs = [instantiate(conf.model_checkpoint)]
    cbs += every_epoch_last(cbs, tmp_path)

    class Worsening(_tiny_module()):
        def validation_step(self, batch, _):
            self.log("val/loss", float(self.current_epoch))  # best at epoch 0, never improves

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(4, 2)), batch_size=2)
    trainer = L.Trainer(max_epochs=3, callbacks=cbs, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=str(tmp_path))
    trainer.fit(Worsening(), data, data)
    assert torch.load(tmp_path / "last.ckpt", weights_only=False)["epoch"] == 2
    assert Path(trainer.checkpoint_callback.best_model_path).name == "epoch_000.ckpt"
    assert sorted(p.name for p in tmp_path.glob("*.ckpt")) == ["epoch_000.ckpt", "last.ckpt"]


class _Requeued(Exception):
    """What submitit's requeue handler does to the process: it ends it."""


@pytest.mark.parametrize("signal_batch", [0, 2, 3])  # mid-epoch, the batch before last, the last batch
def test_signal_checkpoint_resume_keeps_every_validation_row(tmp_path, signal_batch):
    """A pre-timeout signal at any batch of epoch 1 saves last.ckpt; the process then ends (submitit
    requeues it) and the rerun resumes from last.ckpt. Every epoch must still get its one validation
    row. On the last batch Lightning would resume a checkpoint saved at that batch's end in the next
    epoch, skipping the validation of the epoch the signal came in: SignalCheckpoint defers the save
    to the end of that epoch, after its validation."""
    import csv

    import lightning as L
    import torch

    from rucai.callbacks import EvalCSV, SignalCheckpoint

    Tiny = _tiny_module()

    class SignalAt(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.current_epoch == 1 and batch_idx == signal_batch and not trainer.fit_loop.restarting:
                os.kill(os.getpid(), signal.SIGUSR2)

    def fit(ckpt_path=None, extra=()):
        data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 2)), batch_size=2)
        val = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(4, 2)), batch_size=2)
        trainer = L.Trainer(max_epochs=3, callbacks=[*extra, EvalCSV(str(tmp_path)),
                                                     SignalCheckpoint(str(tmp_path / "ckpt"))],
                            logger=False, enable_progress_bar=False, enable_model_summary=False,
                            enable_checkpointing=False, num_sanity_val_steps=0, default_root_dir=str(tmp_path))
        trainer.fit(Tiny(), data, val, ckpt_path=ckpt_path)

    def requeue(signum, frame):
        raise _Requeued

    before = signal.signal(signal.SIGUSR2, requeue)
    try:
        with pytest.raises(_Requeued):
            fit(extra=[SignalAt()])
        assert (tmp_path / "ckpt" / "last.ckpt").is_file()
        fit(ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    finally:
        signal.signal(signal.SIGUSR2, before)
    epochs = [int(r["epoch"]) for r in csv.DictReader(open(tmp_path / "val.csv"))]
    assert epochs == [0, 1, 2]


def test_resume_replaces_rows_of_the_epoch_it_repeats(tmp_path):
    """A run that validated epoch 1 (its row written) and died before saving epoch 1's checkpoint resumes
    from epoch 0's: epoch 1 runs again and its row is replaced, not duplicated."""
    import csv

    import lightning as L
    import torch

    from rucai.callbacks import EvalCSV

    Tiny = _tiny_module()
    ckpt = tmp_path / "epoch0.ckpt"

    class SaveEpoch0ThenDie(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            if trainer.current_epoch == 0:
                trainer.save_checkpoint(str(ckpt))

        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == 2:
                raise _Requeued

    def fit(ckpt_path=None, extra=()):
        data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 2)), batch_size=2)
        val = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(4, 2)), batch_size=2)
        trainer = L.Trainer(max_epochs=3, callbacks=[*extra, EvalCSV(str(tmp_path))], logger=False,
                            enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                            num_sanity_val_steps=0, default_root_dir=str(tmp_path))
        trainer.fit(Tiny(), data, val, ckpt_path=ckpt_path)

    with pytest.raises(_Requeued):
        fit(extra=[SaveEpoch0ThenDie()])
    assert [int(r["epoch"]) for r in csv.DictReader(open(tmp_path / "val.csv"))] == [0, 1]
    fit(ckpt_path=str(ckpt))
    assert [int(r["epoch"]) for r in csv.DictReader(open(tmp_path / "val.csv"))] == [0, 1, 2]


def test_reused_stage_warns_about_changed_settings(tmp_path, caplog):
    cfg = OmegaConf.create({"paths": {"output_dir": str(tmp_path)}, "seed": 0,
                            "method": {"epochs": 3, "tok": {"lr": 0.1}}, "data": {"name": "office"}})
    Stage(cfg, "pretrain").run(lambda st: {"x": 1})
    rec = __import__("json").loads((tmp_path / "pretrain" / "done.json").read_text())
    assert rec["settings"] == {"method.epochs": 3, "method.tok.lr": 0.1, "data.name": "office"}
    cfg.seed = 1  # another seed shares the stage: no warning
    with caplog.at_level("WARNING", logger="rucai.runtime.stages"):
        assert Stage(cfg, "pretrain").run(lambda st: {"x": 2}) == {"x": 1}
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    cfg.method.tok.lr = 0.2
    with caplog.at_level("WARNING", logger="rucai.runtime.stages"):
        assert Stage(cfg, "pretrain").run(lambda st: {"x": 3}) == {"x": 1}  # still reused
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and "method.tok.lr (was 0.1, now 0.2)" in warned[0] and "new run dir" in warned[0]
