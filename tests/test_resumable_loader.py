"""Mid-epoch resume with rucai.data.resumable.ResumableLoader: a run stopped by a pre-timeout signal in
the middle of an epoch and resumed from its checkpoint trains on the same batches, in the same order,
with the same dropout masks, as a run that never stopped."""

import os
import signal

import pytest
import torch

from rucai.data.resumable import ResumableLoader


class _Requeued(Exception):
    """What submitit's requeue handler does to the process: it ends it."""


def _module():
    import lightning as L

    class Dropped(L.LightningModule):
        """Records every training batch; dropout so the RNG's position after resume matters too."""

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Linear(2, 1)
            self.drop = torch.nn.Dropout(0.5)
            self.seen: list[list[float]] = []

        def training_step(self, batch, _):
            self.seen.append(batch[0][:, 0].tolist())
            return self.w(self.drop(batch[0])).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    return Dropped


def _loader(kind: str):
    from rucai.data.sequential import LengthGroupedSampler

    data = torch.utils.data.TensorDataset(torch.arange(40, dtype=torch.float32).repeat(2, 1).T / 40)
    if kind == "random":  # torch's RandomSampler: the order drawn from the global RNG each epoch
        return ResumableLoader(data, batch_size=4, shuffle=True)
    if kind == "workers":
        return ResumableLoader(data, batch_size=4, shuffle=True, num_workers=1)
    return ResumableLoader(data, batch_size=4, sampler=LengthGroupedSampler([i % 7 for i in range(40)], 4, seed=3,
                                                                           group_batches=2))


@pytest.mark.parametrize("kind", ["random", "grouped", "workers"])
def test_mid_epoch_resume_trains_on_the_batches_of_an_uninterrupted_run(tmp_path, kind):
    import lightning as L

    from rucai.callbacks import RNGState, SignalCheckpoint

    class SignalAt(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.current_epoch == 1 and batch_idx == 4 and not trainer.fit_loop.restarting:
                os.kill(os.getpid(), signal.SIGUSR2)

    def fit(root, ckpt_path=None, extra=()):
        L.seed_everything(0)
        model = _module()()
        trainer = L.Trainer(max_epochs=3, callbacks=[*extra, RNGState(), SignalCheckpoint(str(root))], logger=False,
                            enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                            default_root_dir=str(root))
        try:
            trainer.fit(model, _loader(kind), ckpt_path=ckpt_path)
        finally:
            seen = model.seen
        return model, seen

    whole, seen_whole = fit(tmp_path / "whole")

    def requeue(signum, frame):
        raise _Requeued

    before = signal.signal(signal.SIGUSR2, requeue)
    seen_first: list = []
    try:
        with pytest.raises(_Requeued):
            m = _module()
            orig = m.training_step

            def record(self, batch, i):
                seen_first.append(batch[0][:, 0].tolist())
                return orig(self, batch, i)

            m.training_step = record
            L.seed_everything(0)
            model = m()
            trainer = L.Trainer(max_epochs=3, callbacks=[SignalAt(), RNGState(), SignalCheckpoint(str(tmp_path / "cut"))],
                                logger=False, enable_progress_bar=False, enable_model_summary=False,
                                enable_checkpointing=False, default_root_dir=str(tmp_path / "cut"))
            trainer.fit(model, _loader(kind))
        assert len(seen_first) == 10 + 5  # epoch 0, then batches 0-4 of epoch 1
        resumed, seen_rest = fit(tmp_path / "cut", ckpt_path=str(tmp_path / "cut" / "last.ckpt"))
    finally:
        signal.signal(signal.SIGUSR2, before)
    assert seen_first + seen_rest == seen_whole
    assert torch.equal(resumed.w.weight, whole.w.weight) and torch.equal(resumed.w.bias, whole.w.bias)


def test_uninterrupted_run_draws_as_a_plain_dataloader():
    data = torch.utils.data.TensorDataset(torch.arange(20, dtype=torch.float32))
    orders = []
    for cls in (torch.utils.data.DataLoader, ResumableLoader):
        torch.manual_seed(5)
        loader = cls(data, batch_size=3, shuffle=True)
        orders.append([b[0].tolist() for _ in range(2) for b in loader] + [torch.rand(1).item()])
    assert orders[0] == orders[1]
