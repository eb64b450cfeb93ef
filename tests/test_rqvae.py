"""RQ-VAE semantic IDs: quantization math, k-means init, EMA, training, collisions, Office run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rucai.rec.rqvae import (
    ResidualQuantizer,
    RQVAEConfig,
    VectorQuantizer,
    assign_codes,
    code_stats,
    kmeans,
    load_checkpoint,
    resolve_collisions,
    train_rqvae,
)
from tests.conftest import needs_data

TINY = dict(layers=[32], e_dim=8, num_codes=[8, 8], batch_size=64, kmeans_iters=20)


def clustered(n_clusters=8, per=40, dim=16, seed=0):
    g = np.random.default_rng(seed)
    centres = g.normal(size=(n_clusters, dim)) * 2
    x = centres.repeat(per, 0) + 0.05 * g.normal(size=(n_clusters * per, dim))
    return np.concatenate([np.zeros((1, dim)), x]).astype(np.float32)  # row 0 = padding


def test_exact_codebook_gives_zero_quantization_error():
    vq = VectorQuantizer(5, 3, kmeans_init=False)
    vq.embedding.weight.data = torch.randn(5, 3)
    x = vq.codebook.detach()[[3, 1, 4, 1]]
    xq, loss, idx = vq(x)
    assert idx.tolist() == [3, 1, 4, 1]
    torch.testing.assert_close(xq, x)
    assert float(loss) == 0.0


def test_nearest_codeword_and_residual_levels():
    vq = VectorQuantizer(7, 4, kmeans_init=False)
    x = torch.randn(50, 4)
    assert vq.nearest(x).tolist() == torch.cdist(x, vq.codebook.detach()).argmin(1).tolist()

    rq = ResidualQuantizer([4, 4], 2, kmeans_init=False)
    c1 = torch.tensor([[10.0, 0], [0, 10], [-10, 0], [0, -10]])
    c2 = torch.tensor([[1.0, 0], [0, 1], [-1, 0], [0, -1]])
    rq.levels[0].embedding.weight.data, rq.levels[1].embedding.weight.data = c1, c2
    i, j = torch.tensor([0, 1, 3, 2]), torch.tensor([2, 2, 0, 1])
    z = c1[i] + c2[j]
    rq.eval()
    zq, loss, codes = rq(z)
    assert codes.tolist() == torch.stack([i, j], 1).tolist()
    torch.testing.assert_close(zq, z)  # last residual is zero
    assert float(loss) > 0  # level 1 alone leaves the level-2 residual


def test_kmeans_init_picks_codewords_from_data():
    pts = torch.tensor([[0.0, 0], [5, 5], [-5, 5], [5, -5]])
    data = pts.repeat(10, 1) + 0.0
    c = kmeans(data, 4, generator=torch.Generator().manual_seed(0))
    assert sorted(map(tuple, c.tolist())) == sorted(map(tuple, pts.tolist()))
    small = kmeans(pts[:2], 4)  # fewer points than codes: codewords are the points
    assert {tuple(r) for r in small.tolist()} == {tuple(r) for r in pts[:2].tolist()}

    vq = VectorQuantizer(4, 2, kmeans_init=True)
    assert not bool(vq.initted)
    rq = ResidualQuantizer([4], 2)
    rq.levels[0] = vq
    rq.train()
    rq(data, torch.Generator().manual_seed(0))
    assert bool(vq.initted)
    assert sorted(map(tuple, vq.codebook.detach().tolist())) == sorted(map(tuple, pts.tolist()))


def test_ema_moves_codewords_toward_assigned_means():
    vq = VectorQuantizer(2, 2, kmeans_init=False, ema=True, decay=0.5)
    vq.embedding.weight.data = torch.tensor([[0.0, 0.0], [10.0, 10.0]])
    vq.ema_sum.copy_(vq.embedding.weight.data)
    vq.ema_count.fill_(1.0)
    assert not vq.embedding.weight.requires_grad
    x = torch.tensor([[1.0, 1.0], [3.0, 1.0], [9.0, 9.0]])  # means: (2,1) and (9,9)
    before = vq.codebook.detach().clone()
    vq.train()
    for _ in range(30):
        vq(x)
    after = vq.codebook.detach()
    target = torch.tensor([[2.0, 1.0], [9.0, 9.0]])
    assert ((after - target).norm(dim=1) < (before - target).norm(dim=1)).all()
    torch.testing.assert_close(after, target, atol=1e-2, rtol=0)
    vq.eval()  # no update outside training
    vq(x + 100)
    torch.testing.assert_close(vq.codebook.detach(), after)


def test_collision_resolution_unique_ids_and_zero_suffix():
    codes = np.array([[1, 2, 3], [4, 5, 6], [1, 2, 3], [7, 7, 7], [1, 2, 3], [4, 5, 6]])
    ids = resolve_collisions(codes)
    assert ids == {
        1: [1, 2, 3, 0],
        2: [4, 5, 6, 0],
        3: [1, 2, 3, 1],
        4: [7, 7, 7, 0],
        5: [1, 2, 3, 2],
        6: [4, 5, 6, 1],
    }
    assert len({tuple(v) for v in ids.values()}) == len(ids)
    s = code_stats(codes, [8, 8, 8])
    assert s["collision_rate"] == pytest.approx(5 / 6)
    assert s["max_collision_group"] == 3 and s["unique_tuples"] == 3
    assert s["usage"][0] == pytest.approx(3 / 8)
    p = np.array([3, 2, 1]) / 6
    assert s["perplexity"][0] == pytest.approx(float(np.exp(-(p * np.log(p)).sum())))


@pytest.mark.parametrize("ema", [False, True])
def test_training_reduces_recon_loss_and_writes_outputs(tmp_path, ema):
    x = clustered()
    model, stats = train_rqvae(x, tmp_path, epochs=40, ema=ema, keep_last=3, **TINY)
    hist = stats["history"]
    assert hist[-1]["recon_loss"] < 0.5 * hist[0]["recon_loss"]
    assert stats["recon_loss"] < hist[0]["recon_loss"]
    ck = sorted(p.name for p in (tmp_path / "rqvae").glob("*.pt"))
    assert ck == ["epoch_038.pt", "epoch_039.pt", "epoch_040.pt"]
    ids = {int(k): v for k, v in json.loads((tmp_path / "semantic_ids.json").read_text()).items()}
    assert sorted(ids) == list(range(1, len(x)))
    assert len({tuple(v) for v in ids.values()}) == len(ids)
    saved = json.loads((tmp_path / "stats.json").read_text())
    assert 0 <= saved["collision_rate"] <= 1 and len(saved["usage"]) == 2
    reloaded = load_checkpoint(tmp_path / "rqvae" / "epoch_040.pt")
    np.testing.assert_array_equal(assign_codes(reloaded, x), assign_codes(model, x))


def test_deterministic_given_seed():
    x = clustered(seed=1)
    m1, s1 = train_rqvae(x, None, epochs=5, seed=7, **TINY)
    m2, s2 = train_rqvae(x, None, epochs=5, seed=7, **TINY)
    np.testing.assert_array_equal(assign_codes(m1, x), assign_codes(m2, x))
    for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert s1["history"] == s2["history"]
    m3, _ = train_rqvae(x, None, epochs=5, seed=8, **TINY)
    assert not all(
        torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m3.state_dict().values(), strict=True)
    )


def test_config_rejects_unknown_option():
    from rucai.errors import UserError

    with pytest.raises(UserError, match="unknown RQ-VAE option"):
        RQVAEConfig.from_dict({"layerz": [1]})


@pytest.mark.slow
@needs_data("amazon18_office", "Office_Products.item.json")
def test_office_items_minilm_rqvae(tmp_path, monkeypatch):
    from rucai.data.amazon import load_lcrec
    from rucai.rec.embeddings import encode_items
    from tests.conftest import DATA_DIR

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = load_lcrec(DATA_DIR / "amazon18_office", "Office_Products")
    emb = encode_items(data.item_text, num_items=data.num_items, cache_dir=tmp_path / "cache")
    assert emb.shape == (data.num_items + 1, 384) and not emb[0].any()
    _, stats = train_rqvae(emb, tmp_path, epochs=10)
    assert stats["items"] == data.num_items == 2420
    assert stats["history"][-1]["recon_loss"] < stats["history"][0]["recon_loss"]
    assert min(stats["usage"]) > 0.05 and min(stats["perplexity"]) > 5
    assert stats["collision_rate"] < 0.9 and stats["max_collision_group"] < 200
    ids = json.loads((tmp_path / "semantic_ids.json").read_text())
    assert len({tuple(v) for v in ids.values()}) == len(ids) == 2420


# ----------------------------------------------------------------------------- the item tokenizer


class FakeEncoder:
    """Stands in for the sentence encoder: texts -> 4 well-separated clusters (by the title's word)."""

    calls = 0

    def encode(self, texts, **kw):
        FakeEncoder.calls += 1
        g = np.random.default_rng(0)
        centres = g.normal(size=(4, 16)) * 3
        return np.stack([centres[int(t.split()[-1]) % 4] + 0.05 * g.normal(size=16) for t in texts]).astype(np.float32)


def tiny_items(n=24):
    from rucai.data.sequential import SequenceData

    text = {i: {"title": f"item {i}", "brand": "b"} for i in range(1, n + 1)}
    seqs = [[(u + k) % n + 1 for k in range(5)] for u in range(10)]
    return SequenceData(name="tiny", sequences=seqs, num_items=n, item_text=text)


def test_rqvae_tokenizer_gives_every_item_unique_codes_and_caches(tmp_path, monkeypatch):
    from rucai.rec import embeddings, semantic_ids
    from rucai.rec.semantic_ids import RQVAETokenizer
    from rucai.rec.tokenization import item_codes

    FakeEncoder.calls = 0
    monkeypatch.setattr(embeddings, "load_encoder", lambda name, device=None: FakeEncoder())
    data = tiny_items()
    rq = TINY | {"num_codes": [4, 4], "epochs": 3}
    codes = RQVAETokenizer(encoder="fake", fields=["title"], rqvae=rq, cache_dir=str(tmp_path))(data)
    assert sorted(codes) == list(range(1, data.num_items + 1))
    assert {len(c) for c in codes.values()} == {3}  # 2 levels + the collision level
    assert all(0 <= c < 4 for v in codes.values() for c in v[:2])
    assert len({tuple(v) for v in codes.values()}) == data.num_items  # unique after collision resolution

    # the same config through `item_codes` (what rucai.tasks.build calls) reads the cache: no training
    def boom(*a, **k):
        raise AssertionError("RQ-VAE retrained on a cache hit")

    monkeypatch.setattr("rucai.rec.rqvae.train_rqvae", boom)
    conf = {"_target_": "rucai.rec.semantic_ids.RQVAETokenizer", "encoder": "fake", "fields": ["title"],
            "rqvae": rq, "cache_dir": str(tmp_path)}
    assert item_codes(conf, data) == codes
    assert FakeEncoder.calls == 1
    assert len(list((tmp_path / "semantic_ids").iterdir())) == 1
    with pytest.raises(AssertionError, match="retrained"):  # other RQ-VAE settings: a new key, trains
        semantic_ids.semantic_ids(data, encoder="fake", fields=["title"], rqvae=rq | {"epochs": 4},
                                  cache_dir=str(tmp_path))


# ----------------------------------------------------------------------------- MTGRec authors' recipe


def _linears(seq):
    return [(m.in_features, m.out_features) for m in seq if isinstance(m, torch.nn.Linear)]


def test_latent_is_the_last_layer_when_e_dim_is_null():
    from rucai.rec.rqvae import RQVAE

    m = RQVAE(16, RQVAEConfig(layers=[32, 8], e_dim=None, num_codes=[4, 4]))
    assert _linears(m.encoder) == [(16, 32), (32, 8)]  # no appended latent layer
    assert _linears(m.decoder) == [(8, 32), (32, 16)]
    assert [tuple(q.codebook.shape) for q in m.rq.levels] == [(4, 8), (4, 8)]
    assert m.encoder(torch.randn(3, 16)).shape == (3, 8)
    old = RQVAE(16, RQVAEConfig(layers=[32, 8], e_dim=4, num_codes=[4]))  # an int appends a layer (LC-Rec)
    assert _linears(old.encoder) == [(16, 32), (32, 8), (8, 4)] and old.rq.levels[0].codebook.shape == (4, 4)


def test_init_option_xavier_or_torch_default():
    from rucai.rec.rqvae import mlp

    torch.manual_seed(0)
    xav = mlp([64, 64], 0.0, "xavier_normal")[1]
    assert float(xav.bias.abs().sum()) == 0.0  # xavier: zero bias
    torch.manual_seed(0)
    dflt = mlp([64, 64], 0.0, "torch_default")[1]
    bound = 1 / 64**0.5  # nn.Linear: U(-1/sqrt(in), 1/sqrt(in)) for weight and bias
    assert float(dflt.bias.abs().sum()) > 0 and float(dflt.weight.abs().max()) <= bound


def test_adagrad_optimizer_step_matches_hand_computation():
    from rucai.errors import UserError
    from rucai.rec.rqvae import make_optimizer

    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = make_optimizer([p], RQVAEConfig(optimizer="adagrad", lr=0.1, weight_decay=0.5))
    assert type(opt) is torch.optim.Adagrad
    g = torch.tensor([0.5, 2.0])
    acc = torch.zeros(2)
    want = p.detach().clone()
    for _ in range(2):
        p.grad = g.clone()
        opt.step()
        gd = g + 0.5 * want  # weight decay added to the gradient
        acc = acc + gd**2  # G_t = sum of squared gradients
        want = want - 0.1 * gd / (acc.sqrt() + 1e-10)
    torch.testing.assert_close(p.detach(), want)
    assert type(make_optimizer([p], RQVAEConfig())) is torch.optim.AdamW
    with pytest.raises(UserError, match="optimizer"):
        RQVAEConfig(optimizer="sgd")
    with pytest.raises(UserError, match="kmeans_init_on"):
        RQVAEConfig.from_dict({"kmeans_init_on": "everything"})


def test_ema_quantizer_returns_the_codeword_before_its_update():
    """MTGRec EMAVQLayer: x_q is looked up, then cluster_size/embed_avg are EMA-updated with Laplace
    smoothing n * (N_k + eps) / (n + K eps)."""
    vq = VectorQuantizer(2, 2, kmeans_init=False, ema=True, decay=0.5)
    vq.embedding.weight.data = torch.tensor([[0.0, 0.0], [10.0, 10.0]])
    vq.ema_sum.copy_(vq.embedding.weight.data)
    vq.ema_count.fill_(1.0)
    vq.train()
    xq, loss, idx = vq(torch.tensor([[1.0, 1.0]]))
    assert idx.tolist() == [0]
    torch.testing.assert_close(xq, torch.tensor([[0.0, 0.0]]))  # the old codeword
    count = torch.tensor([0.5 + 0.5, 0.5])  # decay * 1 + (1 - decay) * onehot
    summ = torch.tensor([[0.5, 0.5], [5.0, 5.0]])
    n, eps = count.sum(), 1e-5
    torch.testing.assert_close(vq.codebook.detach(), summ / (n * (count + eps) / (n + 2 * eps))[:, None])
    torch.testing.assert_close(loss, torch.tensor(0.25 * 1.0))  # beta * commitment mse((1,1),(0,0))


def test_kmeans_init_on_all_uses_every_fitted_row():
    """k == rows: with kmeans_init_on=all the level-1 codebook is exactly the latents of all rows
    (the second level sees zero residuals); first_batch only sees one batch's rows."""
    x = clustered(n_clusters=8, per=1, dim=6)  # 8 items + padding
    cfg = dict(layers=[5], e_dim=None, num_codes=[8, 8], batch_size=2, kmeans_iters=10, ema=True, epochs=0)
    model, _ = train_rqvae(x, cfg=cfg, kmeans_init_on="all")
    with torch.no_grad():
        z = model.encoder(torch.as_tensor(x[1:]))
    got = sorted(map(tuple, model.rq.levels[0].codebook.detach().numpy().round(5).tolist()))
    assert got == sorted(map(tuple, z.numpy().round(5).tolist()))
    assert float(model.rq.levels[1].codebook.detach().abs().max()) < 1e-5
    first, _ = train_rqvae(x, cfg=cfg | {"epochs": 1}, kmeans_init_on="first_batch", ema=False, lr=0.0)
    distinct = {tuple(r) for r in first.rq.levels[0].codebook.detach().numpy().round(5).tolist()}
    assert len(distinct) == 2  # a batch of 2 rows repeated to fill 8 codes


def test_fit_rows_trains_on_the_subset_only_yet_codes_every_item():
    base = clustered(n_clusters=4, per=20, dim=8)  # padding + 80 items
    far = np.full((1, 8), 50.0, dtype=np.float32)
    x = np.concatenate([base, far])  # item 81 is far away and not fit
    cfg = dict(layers=[16], e_dim=None, num_codes=[4, 4], batch_size=32, kmeans_iters=10, ema=True, epochs=2,
               optimizer="adagrad", kmeans_init_on="all", weight_decay=0.0)
    sub, st = train_rqvae(x, cfg=cfg, fit_rows=list(range(80)))
    ref, _ = train_rqvae(base, cfg=cfg)  # the same 80 rows alone
    for (k, a), b in zip(sub.state_dict().items(), ref.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=k)  # the far row moved nothing
    assert st["items"] == 81 and st["fit_items"] == 80
    assert assign_codes(sub, x).shape == (81, 2)  # yet it gets codes
    full, _ = train_rqvae(x, cfg=cfg)  # fit on it too: a different model
    assert not torch.equal(full.rq.levels[0].codebook, ref.rq.levels[0].codebook)


def test_train_items_are_the_leave_one_out_training_items():
    from rucai.data.sequential import train_items

    assert train_items([[1, 2, 3, 4], [5, 6], [2, 7, 8], [9]]) == [1, 2]


def test_cache_key_covers_every_option_and_keeps_old_keys():
    import hashlib
    from dataclasses import asdict

    from rucai.rec.semantic_ids import cache_key

    emb = np.arange(12, dtype=np.float32).reshape(4, 3)
    cfg = RQVAEConfig()
    old_fields = {k: v for k, v in asdict(cfg).items()
                  if k not in ("optimizer", "lr_schedule", "kmeans_init_on", "init", "device")}
    old = hashlib.sha256(emb.tobytes() + json.dumps(old_fields, sort_keys=True, default=str).encode()).hexdigest()[:16]
    assert cache_key(emb, cfg) == old  # caches made before the new options stay valid
    keys = {cache_key(emb, cfg)}
    for over in [dict(optimizer="adagrad"), dict(e_dim=None), dict(kmeans_init_on="all"), dict(init="torch_default"),
                 dict(lr_schedule="linear"), dict(device="auto")]:
        keys.add(cache_key(emb, RQVAEConfig(**over)))
    keys |= {cache_key(emb, cfg, pca_dim=2), cache_key(emb, cfg, fit_on="train", fit_items=[1, 2]),
             cache_key(emb, cfg, fit_on="train", fit_items=[1, 3])}
    assert len(keys) == 10


def test_cuda_device_without_a_gpu_is_a_user_error():
    from rucai.errors import UserError
    from rucai.rec.rqvae import resolve_device

    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="device=cpu"):
            resolve_device("cuda")


def test_checkpoint_pruning_orders_by_epoch_number(tmp_path):
    from rucai.rec.rqvae import prune_checkpoints

    for e in (998, 999, 1000, 1001):
        (tmp_path / f"epoch_{e:03d}.pt").write_bytes(b"")
    prune_checkpoints(tmp_path, 2)  # a name sort would keep epoch_998 and epoch_999
    assert sorted(f.name for f in tmp_path.iterdir()) == ["epoch_1000.pt", "epoch_1001.pt"]
    prune_checkpoints(tmp_path, None)
    assert len(list(tmp_path.iterdir())) == 2
