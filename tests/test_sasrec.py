import lightning as L
import torch

from rucai.data.synthetic import SyntheticDataModule
from rucai.models.sasrec import SASRec


def _model(**kw):
    torch.manual_seed(0)
    return SASRec(num_items=30, max_len=6, hidden_size=16, num_heads=2, dropout=0.0, attn_dropout=0.0, **kw).eval()


def test_full_scores_shape_and_padding_item_excluded():
    m = _model()
    seq = torch.tensor([[1, 2, 3, 0, 0, 0], [4, 5, 6, 7, 8, 9]])
    scores = m.full_scores(seq, torch.tensor([3, 6]))
    assert scores.shape == (2, 31) and torch.isinf(scores[:, 0]).all() and torch.isfinite(scores[:, 1:]).all()


def test_causal_and_padding_invariance():
    m = _model()
    base = torch.tensor([[1, 2, 3, 0, 0, 0]])
    h = m.encode(base, torch.tensor([3]))
    # items after the last real position (padding replaced by other ids) must not matter
    noisy = torch.tensor([[1, 2, 3, 9, 9, 9]])
    assert torch.allclose(h, m.encode(noisy, torch.tensor([3])), atol=1e-5)
    # but the history does
    assert not torch.allclose(h, m.encode(torch.tensor([[1, 5, 3, 0, 0, 0]]), torch.tensor([3])), atol=1e-4)


def test_mask_history_never_masks_the_target():
    m = _model(mask_history=True)
    batch = {"seq": torch.tensor([[3, 5, 0, 0, 0, 0]]), "lengths": torch.tensor([2]), "target": torch.tensor([5])}
    logged = {}
    m.log = lambda name, value, **kw: logged.__setitem__(name, value)
    m._evaluate(batch, "val")
    assert "val/ndcg@10" in logged  # target 5 stays rankable even though it is in the history


def test_learns_synthetic_transitions():
    dm = SyntheticDataModule(num_users=300, num_items=40, batch_size=64, max_len=10, p_follow=0.9)
    dm.setup("fit")
    model = SASRec(lr=5e-3, hidden_size=32, dropout=0.1, attn_dropout=0.1, **dm.model_kwargs())
    trainer = L.Trainer(max_epochs=6, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, datamodule=dm)
    res = trainer.test(model, datamodule=dm, verbose=False)[0]
    # popularity alone gives ~ 10/40 at best; learned transitions (p_follow=0.9, 3 successors) far more
    assert res["test/recall@10"] > 0.6, res
