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


def _module(seen: list):
    import lightning as L

    class Dropped(L.LightningModule):
        """Records every training batch in `seen`; dropout so the RNG's position after resume matters too."""

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Linear(2, 1)
            self.drop = torch.nn.Dropout(0.5)

        def training_step(self, batch, _):
            seen.append(batch[0][:, 0].tolist())
            return self.w(self.drop(batch[0])).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    return Dropped()


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

    def fit(root, seen, ckpt_path=None, extra=()):
        L.seed_everything(0)
        model = _module(seen)
        trainer = L.Trainer(max_epochs=3, callbacks=[*extra, RNGState(), SignalCheckpoint(str(root))], logger=False,
                            enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                            default_root_dir=str(root))
        trainer.fit(model, _loader(kind), ckpt_path=ckpt_path)
        return model

    seen_whole: list = []
    whole = fit(tmp_path / "whole", seen_whole)

    def requeue(signum, frame):
        raise _Requeued

    before = signal.signal(signal.SIGUSR2, requeue)
    seen_first: list = []
    seen_rest: list = []
    try:
        with pytest.raises(_Requeued):
            fit(tmp_path / "cut", seen_first, extra=[SignalAt()])
        assert len(seen_first) == 10 + 5  # epoch 0, then batches 0-4 of epoch 1
        resumed = fit(tmp_path / "cut", seen_rest, ckpt_path=str(tmp_path / "cut" / "last.ckpt"))
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
