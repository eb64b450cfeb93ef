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


# -- parity with RecBole 1.2.1's SASRec (recbole/model/layers.py, sequential_recommender/sasrec.py) --


def test_feed_forward_has_one_dropout_after_its_second_linear():
    import torch.nn.functional as F

    m = SASRec(num_items=30, max_len=6, hidden_size=16, num_heads=2, dropout=0.5, attn_dropout=0.3).train()
    layer = m.encoder.layers[0]
    assert layer.self_attn.dropout == 0.3 and layer.dropout1.p == 0.5 and layer.dropout2.p == 0.5
    x = torch.randn(2, 6, 16)
    torch.manual_seed(7)
    ours = layer._ff_block(x)
    # RecBole's FeedForward: dropout(dense_2(gelu(dense_1(x)))): exactly one dropout draw, so the
    # same seed reproduces it; a second dropout after the activation would change the draws
    torch.manual_seed(7)
    want = F.dropout(layer.linear2(F.gelu(layer.linear1(x))), 0.5, training=True)
    assert torch.equal(ours, want)


def test_every_projection_is_initialised_normal_0_02():
    torch.manual_seed(0)
    m = SASRec(num_items=500, max_len=20, hidden_size=64, num_heads=2)
    for layer in m.encoder.layers:
        w = layer.self_attn.in_proj_weight  # a Parameter, not an nn.Linear: torch's Xavier would give ~0.088
        assert abs(w.std().item() - 0.02) < 0.001 and abs(w.mean().item()) < 0.001
        assert torch.count_nonzero(layer.self_attn.in_proj_bias) == 0
        for lin in (layer.self_attn.out_proj, layer.linear1, layer.linear2):
            assert abs(lin.weight.std().item() - 0.02) < 0.002 and torch.count_nonzero(lin.bias) == 0
        assert torch.all(layer.norm1.weight == 1) and torch.all(layer.norm1.bias == 0)
    assert abs(m.item_emb.weight.std().item() - 0.02) < 0.002


def _recbole_layer(layer, x, mask):
    """One RecBole TransformerLayer in eval mode, written out: per-head softmax(QK^T/sqrt(d) + mask)V,
    dense, LayerNorm(. + x); then LayerNorm(h + dense_2(gelu(dense_1(h))))."""
    import torch.nn.functional as F

    b, t, d = x.shape
    nh = layer.self_attn.num_heads
    q, k, v = F.linear(x, layer.self_attn.in_proj_weight, layer.self_attn.in_proj_bias).chunk(3, dim=-1)
    q, k, v = (z.view(b, t, nh, d // nh).transpose(1, 2) for z in (q, k, v))
    att = torch.softmax(q @ k.transpose(-1, -2) / (d // nh) ** 0.5 + mask, dim=-1)
    ctx = (att @ v).transpose(1, 2).reshape(b, t, d)
    h = layer.norm1(layer.self_attn.out_proj(ctx) + x)
    return layer.norm2(layer.linear2(F.gelu(layer.linear1(h))) + h)


def test_encoder_matches_recbole_layers_by_hand():
    m = _model()
    seq = torch.tensor([[1, 2, 3, 0, 0, 0], [4, 5, 6, 7, 8, 9]])
    pos = torch.arange(6)
    x = m.emb_norm(m.item_emb(seq) + m.pos_emb(pos)[None])
    # RecBole's get_attention_mask: causal and padding keys, 0 / -10000 added to the scores
    keep = torch.tril((seq != 0)[:, None, None, :].expand(-1, -1, 6, -1))
    mask = torch.where(keep, 0.0, -10000.0)
    for layer in m.encoder.layers:
        x = _recbole_layer(layer, x, mask)
    with torch.no_grad():
        ours = m.encode_all(seq)
    assert torch.allclose(ours[0, :3], x[0, :3], atol=1e-5) and torch.allclose(ours[1], x[1], atol=1e-5)


def test_training_softmax_includes_padding_row_per_option():
    seq, lengths, target = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0]]), torch.tensor([3, 2]), torch.tensor([7, 9])
    for include in (True, False):
        torch.manual_seed(0)
        m = SASRec(num_items=12, max_len=4, hidden_size=8, num_heads=2, dropout=0.0, attn_dropout=0.0,
                   softmax_over_padding=include).eval()
        m.log = lambda *a, **k: None
        loss = m.training_step({"seq": seq, "lengths": lengths, "target": target}, 0)
        with torch.no_grad():
            logits = m.encode(seq, lengths) @ m.item_emb.weight.T  # [2, 13], row 0 = padding
        rows = logits if include else logits[:, 1:]  # cross-entropy by hand: logsumexp - target logit
        want = (torch.logsumexp(rows, dim=1) - logits[torch.arange(2), target]).mean()
        assert torch.allclose(loss, want, atol=1e-6), include
        # the two differ: row 0 is N(0, 0.02), not zero, and takes part in RecBole's softmax
        other = (torch.logsumexp(logits[:, 1:] if include else logits, dim=1) - logits[torch.arange(2), target]).mean()
        assert not torch.allclose(loss, other, atol=1e-7)
    # ranking never offers the padding row, whatever the training softmax
    assert torch.isinf(m.full_scores(seq, lengths)[:, 0]).all()
