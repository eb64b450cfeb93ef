"""MTGRec: influence formula, sampling probabilities, DDP reduction, tokenizers, multi-tokenizer model."""

from __future__ import annotations

import json
import math
import os
import socket

import numpy as np
import pytest
import torch

from rucai.mtgrec.influence import (
    accumulate,
    adam_precondition,
    flat_adam_state,
    group_mean_gradient,
    influence_matrix,
    sampling_probs,
)
from rucai.mtgrec.tokenizers import build_tokenizers, collision_free, drift, load_tokenizers, pca_whiten
from tests.conftest import compose_config, needs_data, run_cli

# ----------------------------------------------------------------------------- influence by hand
# Tiny model: one parameter vector w = (1, 2), per-example loss 0.5 (w.x - y)^2, gradient (w.x - y) x.
#   group A: x=(1,0), y=0 -> residual 1 -> grad (1,0);  x=(0,1), y=1 -> residual 1 -> grad (0,1)
#            mean gradient gA = (0.5, 0.5)
#   group B: x=(1,1), y=1 -> residual 2 -> grad (2,2);  mean gB = (2, 2)
#   valid V1: x=(1,0), y=2 -> residual -1 -> grad (-1,0);  valid V2: x=(0,1), y=0 -> grad (0,2)
# Adam moments m = (0.2, -0.1), v = (0.04, 0.01); b1 0.9, b2 0.999, eps 1e-8:
#   Gamma = (0.9 m + 0.1 g) / sqrt(0.999 v + 0.001 g^2 + 1e-8)
A = [((1.0, 0.0), 0.0), ((0.0, 1.0), 1.0)]
B = [((1.0, 1.0), 1.0)]
V1 = [((1.0, 0.0), 2.0)]
V2 = [((0.0, 1.0), 0.0)]
M = (0.2, -0.1)
VV = (0.04, 0.01)


def _gamma(g):
    return [(0.9 * M[k] + 0.1 * g[k]) / math.sqrt(0.999 * VV[k] + 0.001 * g[k] ** 2 + 1e-8) for k in range(2)]


def _linear():
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))

    def loss_sum(batch):
        x = torch.tensor([b[0] for b in batch])
        y = torch.tensor([b[1] for b in batch])
        return (0.5 * (x @ w - y) ** 2).sum(), len(batch)

    return w, loss_sum


def test_influence_formula_matches_hand_computation():
    w, loss_sum = _linear()
    m, v = torch.tensor(M), torch.tensor(VV)
    gA = group_mean_gradient(loss_sum, [A], [w])
    gA_split = group_mean_gradient(loss_sum, [[A[0]], [A[1]]], [w])  # batching does not matter
    gB = group_mean_gradient(loss_sum, [B], [w])
    g1 = group_mean_gradient(loss_sum, [V1], [w])
    g2 = group_mean_gradient(loss_sum, [V2], [w])
    assert gA.tolist() == pytest.approx([0.5, 0.5]) and gA_split.tolist() == pytest.approx([0.5, 0.5])
    assert gB.tolist() == pytest.approx([2.0, 2.0])
    assert g1.tolist() == pytest.approx([-1.0, 0.0]) and g2.tolist() == pytest.approx([0.0, 2.0])
    assert w.grad is None  # nothing left behind for the optimizer
    gammas = torch.stack([adam_precondition(gA, m, v), adam_precondition(gB, m, v)])
    hand_gamma = [_gamma([0.5, 0.5]), _gamma([2.0, 2.0])]
    assert gammas.tolist()[0] == pytest.approx(hand_gamma[0], rel=1e-6)
    assert gammas.tolist()[1] == pytest.approx(hand_gamma[1], rel=1e-6)
    # e.g. Gamma_A[0] = 0.23 / sqrt(0.03996 + 0.00025 + 1e-8)
    assert hand_gamma[0][0] == pytest.approx(0.23 / math.sqrt(0.04021001))
    inf = influence_matrix(gammas, torch.stack([g1, g2]))
    hand = [[-hand_gamma[i][0], 2 * hand_gamma[i][1]] for i in range(2)]
    assert inf.tolist()[0] == pytest.approx(hand[0], rel=1e-6)
    assert inf.tolist()[1] == pytest.approx(hand[1], rel=1e-6)


def test_stage_accumulation_is_lr_weighted():
    i1 = torch.tensor([[1.0, 3.0], [0.0, 2.0]], dtype=torch.float64)
    i2 = torch.tensor([[5.0, 1.0], [4.0, 0.0]], dtype=torch.float64)
    acc = accumulate([i1, i2], [0.003, 0.001])  # weights 3/4, 1/4
    assert acc.flatten().tolist() == pytest.approx([2.0, 2.5, 1.0, 1.5])
    assert accumulate([i1], [0.5]).flatten().tolist() == pytest.approx(i1.flatten().tolist())


@pytest.mark.parametrize("tau", [1.0, 3.0, 5.0])
def test_sampling_probs_follow_softmax_over_tau(tau):
    inf = torch.tensor([[2.0, 0.0], [1.0, -1.0], [-3.0, 1.0]], dtype=torch.float64)
    mean = [1.0, 0.0, -1.0]  # mean over validation tokenizers j
    z = sum(math.exp(x / tau) for x in mean)
    p = sampling_probs(inf, tau)
    assert p.tolist() == pytest.approx([math.exp(x / tau) / z for x in mean])
    assert float(p.sum()) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        sampling_probs(inf, 0.0)


def test_adam_state_is_read_from_the_optimizer():
    lin = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(lin.parameters(), lr=0.1)
    params = list(lin.parameters())
    m0, v0 = flat_adam_state(opt, params)  # before any step: zeros
    assert m0.abs().sum() == 0 and v0.abs().sum() == 0 and len(m0) == 8
    lin(torch.randn(4, 3)).sum().backward()
    grads = torch.cat([p.grad.reshape(-1) for p in params])
    opt.step()
    m, v = flat_adam_state(opt, params)
    assert torch.allclose(m, 0.1 * grads) and torch.allclose(v, 0.001 * grads**2)


# ----------------------------------------------------------------------------- DDP (2 CPU ranks)


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    w, loss_sum = _linear()
    data = A + B  # 3 examples, unequal shards: rank 0 gets 2, rank 1 gets 1
    shard = data[rank::world]
    g = group_mean_gradient(loss_sum, [shard], [w])
    if rank == 0:
        torch.save(g, out)
    dist.destroy_process_group()


def test_group_gradient_under_ddp_equals_single_process(tmp_path):
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(tmp_path / "g.pt")
    mp.spawn(_ddp_worker, args=(2, port, out), nprocs=2, join=True)
    w, loss_sum = _linear()
    single = group_mean_gradient(loss_sum, [A + B], [w])  # mean over all 3 examples
    assert single.tolist() == pytest.approx([(1 + 0 + 2) / 3, (0 + 1 + 2) / 3])
    assert torch.load(out).tolist() == pytest.approx(single.tolist())


# ----------------------------------------------------------------------------- tokenizers


def _emb(n=300, d=24, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n + 1, d)).astype(np.float32)
    x[0] = 0
    return x


TINY_RQ = {"epochs": 4, "layers": [32], "e_dim": 8, "num_codes": [4, 4, 4], "kmeans_iters": 5, "batch_size": 128,
           "ema": True}


@pytest.mark.parametrize("mode,k", [("epochs", 3), ("random", 2)])
def test_each_tokenizer_is_collision_free(tmp_path, mode, k):
    man = build_tokenizers(_emb(), tmp_path, num_tokenizers=k, mode=mode, pca_dim=16, rqvae=TINY_RQ)
    toks, man2 = load_tokenizers(tmp_path)
    assert man2 == json.loads((tmp_path / "tokenizers.json").read_text()) and len(toks) == k
    for ids in toks:
        assert sorted(ids) == list(range(1, 301))
        assert collision_free(ids)
        assert len({tuple(v[:3]) for v in ids.values()}) < 300  # 64 tuples for 300 items: suffixes were needed
    assert [s["epoch"] for s in man["sources"]] == ([2, 3, 4] if mode == "epochs" else [4, 4])
    assert len({s["rqvae_seed"] for s in man["sources"]}) == (1 if mode == "epochs" else 2)
    assert len(man["adjacent_drift"]) == k - 1
    for d in man["adjacent_drift"]:
        assert 0.0 <= d["changed_first_code"] <= d["changed"] <= 1.0


def test_drift_counts_changed_items():
    a = {1: [0, 0, 0, 0], 2: [1, 2, 3, 0], 3: [4, 4, 4, 0], 4: [5, 5, 5, 0]}
    b = {1: [0, 0, 0, 0], 2: [1, 2, 9, 0], 3: [7, 4, 4, 0], 4: [5, 5, 5, 0]}
    d = drift(a, b)
    assert d["changed"] == 0.5 and d["changed_first_code"] == 0.25
    assert d["changed_per_level"] == [0.25, 0.0, 0.25, 0.0]


def test_pca_whiten_gives_unit_covariance():
    x = np.random.default_rng(1).normal(size=(500, 12)) @ np.diag(np.arange(1, 13))
    z = pca_whiten(x, 5)
    assert z.shape == (500, 5)
    assert np.allclose(np.cov(z.T), np.eye(5), atol=1e-4)


# ----------------------------------------------------------------------------- model


def _tiny_model(select_prob=None, dropout=0.0):
    from rucai.mtgrec.model import MultiTokenizerTIGER

    t0 = {1: [0, 1, 0, 0], 2: [1, 0, 0, 0], 3: [1, 1, 0, 0]}
    t1 = {1: [2, 2, 1, 0], 2: [1, 0, 0, 0], 3: [0, 3, 2, 0]}
    torch.manual_seed(0)
    return MultiTokenizerTIGER(3, [t0, t1], codebook_size=4, max_len=3, d_model=8, d_kv=4, d_ff=8, num_layers=1,
                               num_decoder_layers=1, num_heads=2, dropout=dropout, num_beams=3, topk=[1, 2],
                               select_prob=select_prob), t0, t1


def test_tokenizers_share_one_vocabulary():
    model, t0, t1 = _tiny_model()
    seq = torch.tensor([[1, 3, 0]])
    lengths = torch.tensor([2])
    ids0, _ = model.encode_inputs(seq, lengths, 0)
    ids1, _ = model.encode_inputs(seq, lengths, 1)
    tok = lambda lv, c: 2 + 4 * lv + c  # noqa: E731  (offset 2, 4 codes per level)
    assert ids0[0].tolist() == [tok(i, c) for i, c in enumerate(t0[1])] + [tok(i, c) for i, c in enumerate(t0[3])] + [1]
    assert ids1[0].tolist() == [tok(i, c) for i, c in enumerate(t1[1])] + [tok(i, c) for i, c in enumerate(t1[3])] + [1]
    assert model.t5.config.vocab_size == 2 + 4 * 4
    assert not {"tokenizers", "item_codes"} & set(model.hparams)  # code tables stay out of hparams.yaml
    model.eval_tokenizer = 1
    assert model._trie().item_of([tok(i, c) for i, c in enumerate(t1[3])]) == 3


def test_training_samples_tokenizers_by_select_prob(monkeypatch):
    model, _, _ = _tiny_model(select_prob=[0.0, 1.0])
    seen = []
    orig = model.example_losses
    monkeypatch.setattr(model, "example_losses", lambda b, tok: seen.append(tok.clone()) or orig(b, tok))
    monkeypatch.setattr(model, "log", lambda *a, **k: None)
    batch = {"seq": torch.tensor([[1, 0, 0]] * 64), "lengths": torch.ones(64, dtype=torch.long),
             "target": torch.full((64,), 2)}
    model.training_step(batch, 0)
    assert seen[0].tolist() == [1] * 64
    model.select_prob.copy_(torch.tensor([0.5, 0.5]))
    model.training_step(batch, 0)
    assert 10 < int(seen[1].sum()) < 54


def test_group_gradient_on_tiny_t5_equals_mean_of_per_example_gradients():
    """The accumulated group gradient (no per-example storage) equals the brute-force mean of
    per-example gradients computed one by one."""
    model, _, _ = _tiny_model(dropout=0.0)
    params = [p for p in model.parameters() if p.requires_grad]
    seqs = [([1, 2], 3), ([3], 1), ([2, 3, 1], 2), ([1], 1)]
    batches = []
    for chunk in (seqs[:3], seqs[3:]):
        seq = torch.zeros(len(chunk), 3, dtype=torch.long)
        for r, (h, _) in enumerate(chunk):
            seq[r, : len(h)] = torch.tensor(h)
        batches.append({"seq": seq, "lengths": torch.tensor([len(h) for h, _ in chunk]),
                        "target": torch.tensor([t for _, t in chunk])})
    for tok in (0, 1):
        g = group_mean_gradient(lambda b, tok=tok: model.loss_sum(b, tok), batches, params)
        per = []
        for b in batches:
            for r in range(len(b["target"])):
                one = {k: v[r : r + 1] for k, v in b.items()}
                loss = model.example_losses(one, tok).sum()
                gr = torch.autograd.grad(loss, params, allow_unused=True)
                per.append(torch.cat([(x if x is not None else torch.zeros_like(p)).reshape(-1)
                                      for x, p in zip(gr, params, strict=True)]))
        assert torch.allclose(g, torch.stack(per).mean(0), atol=1e-6)


# ----------------------------------------------------------------------------- curriculum state


def test_curriculum_state_survives_a_checkpoint(tmp_path):
    """The callback's state (influence per stage, lr weights, history, stage index, probabilities)
    goes through a Lightning checkpoint (torch.save / torch.load(weights_only=True)) unchanged."""
    from rucai.mtgrec.curriculum import CurriculumCallback

    def fresh():
        return CurriculumCallback([2, 1], 1.0, [], [], None, 4, tmp_path / "c.json")

    cb = fresh()
    cb.stage_scores = [torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)]
    cb.weights = [0.003]
    cb.history = [{"stage": 0, "epoch": 2, "probs_before": [0.5, 0.5], "probs": [0.27, 0.73], "lr_weight": 0.003}]
    cb.probs = [0.27, 0.73]
    torch.save({"callbacks": {"CurriculumCallback": cb.state_dict()}}, tmp_path / "x.ckpt")
    state = torch.load(tmp_path / "x.ckpt", weights_only=True)["callbacks"]["CurriculumCallback"]
    assert state["stage"] == 1
    again = fresh()
    again.load_state_dict(state)
    assert again.history == cb.history and again.weights == cb.weights and again.probs == cb.probs
    assert torch.equal(again.stage_scores[0], cb.stage_scores[0])
    # the next stage accumulates over both stages, as in a run that never stopped
    acc = accumulate(again.stage_scores + [torch.zeros(2, 2, dtype=torch.float64)], again.weights + [0.001])
    assert acc.flatten().tolist() == pytest.approx([0.75, 1.5, 2.25, 3.0])


# ----------------------------------------------------------------------------- configuration


def test_method_defaults_are_the_authors_settings():
    """`method=mtgrec` carries pretrain.sh / finetune.sh / tokenizer/config.yaml; the RQ-VAE block
    names only options rucai.rec.rqvae.RQVAEConfig knows."""
    from dataclasses import fields

    from rucai.mtgrec.config import MTGRecMethod, RQVAESettings
    from rucai.rec.rqvae import RQVAEConfig

    m = MTGRecMethod()
    tk, pt, ft = m.tokenizers, m.pretrain, m.finetune
    assert (tk.num_tokenizers, tk.mode, tk.pca_dim, tk.seed) == (25, "epochs", 128, 2024)
    assert tk.encoder.endswith("sentence-t5-base")
    assert (tk.rqvae.epochs, tk.rqvae.layers, tk.rqvae.e_dim, tk.rqvae.num_codes, tk.rqvae.batch_size,
            tk.rqvae.ema) == (10000, [2048, 1024, 512, 256, 128], None, [256, 256, 256], 2048, True)
    assert (tk.rqvae.optimizer, tk.rqvae.weight_decay, tk.rqvae.kmeans_init_on, tk.rqvae.lr_schedule) == \
        ("adagrad", 0.0, "all", "constant")
    assert (pt.stages, pt.epochs, pt.lr, pt.warmup_steps, pt.tau, pt.max_grad_norm) == \
        ([60, 20, 20, 20, 20, 20, 20], 200, 5e-3, 2500, 1.0, 1.0)  # 10,000 accelerate steps / 4 GPUs
    assert pt.effective_batch_size == ft.effective_batch_size == 1024 and pt.save_epochs == [90, 100, 110, 120]
    assert m.finetune_grid.epochs == [90, 100, 110, 120] and m.finetune_grid.tokenizers == [10, 11, 12, 13, 14, 15]
    assert pt.influence_train_examples is None and pt.influence_val_examples is None and pt.val_users is None
    assert (ft.epochs, ft.patience, ft.warmup_steps) == (100, 10, 0)
    assert {f.name for f in fields(RQVAESettings)} == {f.name for f in fields(RQVAEConfig)} - {"seed", "keep_last"}


@pytest.mark.parametrize("exp,layers,k", [("instruments", 6, 25), ("scientific", 5, 15), ("games", 7, 25)])
def test_paper_experiments_keep_the_paper_settings(exp, layers, k):
    cfg = compose_config(f"experiment=mtgrec/{exp}")
    m = cfg.method
    assert m.tokenizers.num_tokenizers == k and m.tokenizers.rqvae.epochs == 10000
    assert m.pretrain.epochs == 200 and list(m.pretrain.stages) == [60, 20, 20, 20, 20, 20, 20]
    assert m.pretrain.warmup_steps == 2500 and m.pretrain.influence_train_examples is None
    assert m.pretrain.effective_batch_size == m.finetune.effective_batch_size == 1024
    assert (cfg.model.lr, cfg.model.test_num_beams, m.finetune.epochs, m.finetune.patience) == (2e-4, 50, 100, 10)
    assert cfg.data.max_users is None and cfg.data.batch_size == 256
    assert cfg.model.num_layers == cfg.model.num_decoder_layers == layers and cfg.model.d_model == 128
    assert cfg.model.constrained is False and cfg.model.invalid_beams == "miss" and cfg.model.user_token == 1


def test_office_cpu_is_the_cpu_scaled_run_and_smoke_shrinks_it():
    cfg = compose_config("experiment=mtgrec/office_cpu")
    m = cfg.method
    assert (m.tokenizers.num_tokenizers, m.tokenizers.rqvae.epochs, m.pretrain.epochs, list(m.pretrain.stages),
            m.finetune.epochs, m.finetune.patience, cfg.data.max_users, cfg.model.d_model) == \
        (5, 300, 40, [10, 6, 6, 6, 6, 6], 40, 5, None, 64)
    assert (m.tokenizers.rqvae.optimizer, m.tokenizers.rqvae.e_dim) == ("adagrad", None)  # the authors' recipe
    assert m.pretrain.influence_batch_size == cfg.data.batch_size == 256
    tiger = compose_config("experiment=tiger/office_cpu").model  # the converged comparison's two T5s match
    assert all(cfg.model[k] == tiger[k] for k in ("d_model", "d_kv", "d_ff", "num_layers", "num_decoder_layers",
                                                   "num_heads", "dropout"))
    for exp in ("office_cpu", "office_cpu_no_pretrain", "instruments"):  # debug=smoke: experiments/mtgrec/debug
        s = compose_config(f"experiment=mtgrec/{exp}", "debug=smoke")
        assert (s.method.tokenizers.num_tokenizers, s.method.tokenizers.rqvae.epochs, s.method.pretrain.epochs,
                list(s.method.pretrain.stages), s.method.finetune.epochs, s.data.max_users, s.model.d_model) == \
            (2, 3, 2, [1], 1, 100, 16), exp
        assert s.trainer.limit_train_batches == 3
    ablation = compose_config("experiment=mtgrec/office_cpu_no_pretrain").method
    assert ablation.pretrain.enabled is False and ablation.finetune.epochs == 80


def test_misspelled_method_key_fails_at_compose():
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="epochz"):
        compose_config("experiment=mtgrec/office_cpu", "method.pretrain.epochz=3")


def test_misspelled_method_key_is_one_cli_line():
    r = run_cli("experiment=mtgrec/office_cpu", "method.pretrain.epochz=3", timeout=120)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:"), r.stderr[-2000:]
    assert "epochz" in lines[0]


def test_no_smoke_branches_and_no_private_core_imports():
    """Smoke sizes live in experiments/mtgrec/debug/smoke.yaml; settings come from cfg.method."""
    from pathlib import Path

    import rucai.mtgrec

    for path in Path(rucai.mtgrec.__file__).parent.glob("*.py"):
        src = path.read_text()
        for needle in ("cfg.smoke", "_smoke(", '"smoke"', "from rucai.tasks import", "default="):
            assert needle not in src, (path.name, needle)


# ----------------------------------------------------------------------------- end to end


@pytest.mark.slow  # ~1-2 min on the shared 2-core VM; tests/test_smoke.py runs each experiment's plain smoke
@needs_data("amazon18_office", "Office_Products.item.json")
def test_pipeline_smoke_and_stage_reuse(tmp_path):
    run = tmp_path / "run"
    r = run_cli("experiment=mtgrec/office_cpu", "debug=smoke", run_dir=run, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    m = r.metrics()
    assert m["status"] == "completed" and 0.0 <= m["test/ndcg@10"] <= m["test/recall@10"] <= 1.0
    for stage in ("tokenizers", "pretrain", "finetune"):  # each stage's result is its done.json
        assert (run / stage / "done.json").is_file(), stage
    summary = json.loads((run / "pretrain" / "done.json").read_text())["result"]
    hist = json.loads((run / "pretrain" / "curriculum.json").read_text())
    assert len(hist) == 1 and sum(hist[0]["probs"]) == pytest.approx(1.0)
    assert summary["probs_per_stage"] == [hist[0]["probs"]]
    # the probabilities written are softmax(mean_j accumulated I / tau)
    acc = torch.tensor(hist[0]["accumulated_influence"], dtype=torch.float64)
    assert hist[0]["probs"] == pytest.approx(sampling_probs(acc, summary["tau"]).tolist())
    assert (run / "pretrain" / "checkpoints" / "last.ckpt").is_file()  # pre-training: last.ckpt every epoch
    ft = json.loads((run / "finetune" / "done.json").read_text())["result"]
    assert ft["test/ndcg@10"] == m["test/ndcg@10"] and ft["best_ckpt"].startswith(str(run / "finetune"))
    toks, _ = load_tokenizers(run / "tokenizers")
    assert all(collision_free(t) for t in toks)
    # a later stage run alone in the same directory reuses the earlier stages' results
    before = (run / "pretrain" / "model.pt").stat().st_mtime_ns
    (run / "finetune" / "done.json").unlink()
    r2 = run_cli("experiment=mtgrec/office_cpu", "debug=smoke", "task=mtgrec.finetune", run_dir=run, timeout=600)
    assert r2.returncode == 0, r2.stderr[-3000:]
    log = (run / "run.log").read_text()
    assert "stage pretrain: reusing" in log and "stage finetune: running" in log
    assert (run / "pretrain" / "model.pt").stat().st_mtime_ns == before
    assert r2.metrics()["test/ndcg@10"] == m["test/ndcg@10"]  # same seed, same weights


# ----------------------------------------------------------------------------- issue 14: schedule, grid, user token


def test_grad_accumulation_from_effective_batch():
    from rucai.errors import UserError
    from rucai.mtgrec.tasks import grad_accumulation

    assert grad_accumulation(1024, 256, 4, "method.pretrain") == 1  # the authors' 4 GPUs x 256
    assert grad_accumulation(1024, 256, 1, "method.pretrain") == 4
    assert grad_accumulation(1024, 128, 2, "method.pretrain") == 4
    assert grad_accumulation(None, 256, 3, "method.pretrain") == 1
    for eff, bs, world in ((1000, 256, 1), (256, 256, 2)):
        with pytest.raises(UserError, match="effective_batch_size") as e:
            grad_accumulation(eff, bs, world, "method.finetune")
        assert "\n" not in str(e.value) and "method.finetune" in str(e.value)


def test_warmup_counts_optimizer_steps_under_accumulation():
    """8 batches per epoch, effective batch = 2 batches -> 4 optimizer steps per epoch, 2 epochs = 8
    steps; warm-up 4 steps: lr_s / lr = s/4 for s < 4, then 0.5 (1 + cos(pi (s-4)/4))."""
    import lightning as L
    from torch.utils.data import DataLoader

    from rucai.data.sequential import collate_right_padded
    from rucai.mtgrec.tasks import set_accumulation

    model, _, _ = _tiny_model()
    model.lr, model.warmup_steps = 0.01, 4
    pairs = [([1, 2], 3), ([2], 1), ([3, 1], 2), ([1], 1)] * 4  # 16 examples
    loader = DataLoader(pairs, batch_size=2, collate_fn=lambda b: collate_right_padded(b, 3))

    class DM:  # what set_accumulation reads from the data module
        def train_batch_size(self):
            return 2

    lrs = []

    class Rec(L.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            lrs.append(optimizer.param_groups[0]["lr"])

    trainer = L.Trainer(max_epochs=2, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[Rec()],
                        limit_val_batches=0)
    assert set_accumulation(trainer, DM(), 4, "method.pretrain") == 2 == trainer.accumulate_grad_batches
    trainer.fit(model, train_dataloaders=loader)
    expect = [0.0, 0.25, 0.5, 0.75, 1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5, 0.5 * (1 + math.cos(3 * math.pi / 4))]
    assert trainer.global_step == 8
    assert lrs == pytest.approx([0.01 * e for e in expect])


def test_user_token_reaches_every_tokenizer_in_the_multi_tokenizer_model():
    from rucai.mtgrec.model import MultiTokenizerTIGER

    t0 = {1: [0, 1, 0, 0], 2: [1, 0, 0, 0], 3: [1, 1, 0, 0]}
    t1 = {1: [2, 2, 1, 0], 2: [1, 0, 0, 0], 3: [0, 3, 2, 0]}
    model = MultiTokenizerTIGER(3, [t0, t1], codebook_size=4, max_len=3, d_model=8, d_kv=4, d_ff=8, num_layers=1,
                                num_decoder_layers=1, num_heads=2, dropout=0.0, num_beams=3, topk=[1, 2],
                                user_token=3)
    batch = {"seq": torch.tensor([[1, 3, 0], [2, 0, 0]]), "lengths": torch.tensor([2, 1]),
             "target": torch.tensor([2, 3]), "user": torch.tensor([4, 6])}
    off = 2 + 4 * 4  # pad, eos, 4 levels x 4 codes
    assert model.t5.config.vocab_size == off + 3
    for k in (0, 1):
        ids, mask = model.model_inputs(batch, tok=k)
        plain, pmask = model.encode_inputs(batch["seq"], batch["lengths"], k)
        assert ids[:, 0].tolist() == [off + 1, off + 0] and torch.equal(ids[:, 1:], plain)
        assert torch.equal(mask[:, 1:], pmask) and mask[:, 0].tolist() == [1, 1]
    assert torch.isfinite(model.example_losses(batch, 1)).all()


@pytest.mark.parametrize("tau", [1, 3, 5])
def test_tau_sweep_composes(tau):
    """README: python run.py -m experiment=mtgrec/instruments method.pretrain.tau=1,3,5 (pretrain.sh TAU_LIST)."""
    cfg = compose_config("experiment=mtgrec/instruments", f"method.pretrain.tau={tau}")
    assert cfg.method.pretrain.tau == tau and cfg.task == "mtgrec.pipeline"


def test_grid_cells_must_be_kept_by_pretraining():
    from rucai.errors import UserError
    from rucai.mtgrec.tasks import grid_cells

    cfg = compose_config("experiment=mtgrec/instruments")
    assert grid_cells(cfg) == [(e, k) for e in (90, 100, 110, 120) for k in range(10, 16)]
    assert grid_cells(compose_config("experiment=mtgrec/games"))[0] == (140, 10)
    assert grid_cells(compose_config("experiment=mtgrec/scientific"))[-1] == (120, 9)
    last = compose_config("experiment=mtgrec/office_cpu", "method.finetune_grid.epochs=[40]")
    assert grid_cells(last) == [(40, 3), (40, 4)]  # the final epoch is always kept (model.pt)
    with pytest.raises(UserError, match="save_epochs"):
        grid_cells(compose_config("experiment=mtgrec/office_cpu", "method.finetune_grid.epochs=[1]"))


@pytest.mark.slow  # ~2 min on the shared 2-core VM
def test_finetune_grid_smoke_selects_on_validation(tmp_path, tiny_data_dir):
    import csv

    run = tmp_path / "run"
    args = ("experiment=mtgrec/office_cpu", "debug=smoke", "task=mtgrec.finetune_grid", "hardware=cpu",
            f"paths.data_dir={tiny_data_dir}", "method.pretrain.save_epochs=[1,2]",
            "method.finetune_grid.epochs=[1,2]", "method.finetune_grid.tokenizers=[0,1]")
    env = {"RUCAI_DATA_DIR": str(tiny_data_dir)}
    r = run_cli(*args, run_dir=run, timeout=900, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    for e in (1, 2):  # pre-training kept the T5 weights after epochs 1 and 2
        assert (run / "pretrain" / f"t5_ep{e:03d}.pt").is_file()
    grid_dir = run / "finetune_grid"
    res = json.loads((grid_dir / "done.json").read_text())["result"]
    rows = res["grid"]
    assert [(c["epoch"], c["tokenizer"]) for c in rows] == [(1, 0), (1, 1), (2, 0), (2, 1)]
    val = "val/ndcg@10"  # cfg.monitor.metric
    best = max(rows, key=lambda c: c[val])  # selection on validation, not on test
    assert (res["best_epoch"], res["best_tokenizer"]) == (best["epoch"], best["tokenizer"])
    assert res["test/ndcg@10"] == best["test/ndcg@10"] and res[val] == best[val]
    assert res["test_max_over_cells"]["test/ndcg@10"] == max(c["test/ndcg@10"] for c in rows)
    for c in rows:  # each cell is its own fine-tuning stage, started from that epoch's weights
        cell = json.loads((grid_dir / f"ep{c['epoch']}_tok{c['tokenizer']}" / "done.json").read_text())["result"]
        assert cell["tokenizer"] == c["tokenizer"] and cell["weights"].endswith(f"t5_ep{c['epoch']:03d}.pt")
        assert cell["test/ndcg@10"] == c["test/ndcg@10"]
    with open(grid_dir / "grid.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 4 and float(table[0]["test/ndcg@10"]) == rows[0]["test/ndcg@10"]
    assert r.metrics()["test/ndcg@10"] == res["test/ndcg@10"]
    # resumable: the cells done are reused when the grid is run again
    (grid_dir / "done.json").unlink()
    r2 = run_cli(*args, run_dir=run, timeout=900, env=env)
    assert r2.returncode == 0, r2.stderr[-3000:]
    log = (run / "run.log").read_text()
    assert all(f"stage finetune_grid/ep{e}_tok{k}: reusing" in log for e in (1, 2) for k in (0, 1))
    assert json.loads((grid_dir / "done.json").read_text())["result"]["grid"] == rows


def test_tiger_rqvae_authors_tokenizer_equals_mtgrec_last_tokenizer(tmp_path, monkeypatch):
    """The same recipe (PCA whitening fit on all items, the RQ-VAE fit on the training items, same
    seed and epochs) gives a TIGER run (`item_tokenizer=rqvae_authors`) the codes of MTGRec's last
    tokenizer; fitting on all items instead gives other codes."""
    from rucai.data.sequential import SequenceData, train_items
    from rucai.rec import embeddings
    from rucai.rec.semantic_ids import semantic_ids

    n = 60
    vecs = _emb(n=n, d=12, seed=3)

    class Enc:
        def encode(self, texts, **kw):
            return vecs[[int(t.split()[-1]) for t in texts]]

    monkeypatch.setattr(embeddings, "load_encoder", lambda name, device=None: Enc())
    seqs = [[(3 * u + k) % n + 1 for k in range(4)] for u in range(12)]
    data = SequenceData(name="tiny", sequences=seqs, num_items=n,
                        item_text={i: {"title": f"item {i}"} for i in range(1, n + 1)})
    fit = train_items(seqs)
    assert 0 < len(fit) < n
    rq = {**TINY_RQ, "e_dim": None, "layers": [16, 8], "optimizer": "adagrad", "weight_decay": 0.0,
          "kmeans_init_on": "all", "init": "torch_default", "batch_size": 16}
    emb = embeddings.encode_items(data.item_text, encoder="fake", fields=("title",), cache_dir=tmp_path,
                                  num_items=n)
    man = build_tokenizers(emb, tmp_path / "tok", num_tokenizers=2, pca_dim=6, rqvae=rq, seed=7, fit_items=fit)
    assert man["fit_items"] == len(fit)
    last = load_tokenizers(tmp_path / "tok")[0][-1]
    kw = dict(encoder="fake", fields=["title"], rqvae={**rq, "seed": 7}, cache_dir=str(tmp_path), pca_dim=6)
    assert semantic_ids(data, fit_on="train", **kw) == last
    assert semantic_ids(data, fit_on="all", **kw) != last
