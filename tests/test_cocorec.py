"""CoCoRec's model math by hand: masking, the two item sides, the three losses, padding never ranked."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from rucai.cocorec.model import CoCoRec, info_nce, mask_codes
from rucai.errors import UserError

N, C, K, V, D = 30, 4, 8, 2, 16  # items, codes per item, codes per level, views, hidden


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, K, (N + 1, C), generator=g) + torch.arange(C) * K + 1
    codes[0] = 0
    text = torch.randn(V, N + 1, D, generator=g)
    text[:, 0] = 0
    return codes, text


def _model(**kw) -> CoCoRec:
    torch.manual_seed(0)
    codes, text = _inputs()
    args = dict(num_items=N, item_codes=codes, text_vectors=text, code_vocab=C * K + 1, num_codes=C, max_len=6,
                hidden_size=D, inner_size=32, num_heads=2, dropout=0.0, fusion_dropout=0.0, warmup_steps=0)
    return CoCoRec(**(args | kw))


def _batch(g: torch.Generator | None = None, b: int = 5):
    g = g or torch.Generator().manual_seed(1)
    lengths = torch.randint(1, 7, (b,), generator=g)
    seq = torch.zeros(b, 6, dtype=torch.long)
    for i, n in enumerate(lengths.tolist()):
        seq[i, :n] = torch.randint(1, N + 1, (n,), generator=g)
    return {"seq": seq, "lengths": lengths, "target": torch.randint(1, N + 1, (b,), generator=g)}


def test_masking_follows_80_10_10_and_never_touches_padding():
    vocab = C * K + 1
    codes = (torch.arange(C) * K + 1 + 3).expand(4000, C).clone()  # every code = level offset + 3
    real = torch.ones(4000, dtype=torch.bool)
    real[:1000] = False  # padding rows
    out, labels = mask_codes(codes, real, ratio=0.5, vocab=vocab, generator=torch.Generator().manual_seed(0))
    assert (out[:1000] == codes[:1000]).all() and (labels[:1000] == -100).all()
    chosen = labels[1000:] != -100
    assert abs(chosen.float().mean().item() - 0.5) < 0.02
    assert (labels[1000:][chosen] == codes[1000:][chosen]).all()  # labels = the original tokens
    o, c = out[1000:][chosen], codes[1000:][chosen]
    n = len(o)
    to_mask = (o == 0).sum().item() / n
    changed = ((o != 0) & (o != c)).sum().item() / n
    assert abs(to_mask - 0.8) < 0.02
    # a random token of the whole table (1/vocab-1 chance of drawing the same one back)
    assert abs(changed - 0.1 * (1 - 1 / (vocab - 1))) < 0.015
    assert (out[1000:][~chosen] == codes[1000:][~chosen]).all()
    levels = ((o[(o != 0) & (o != c)] - 1) // K).unique()
    assert len(levels) == C  # random replacements come from every level, not the code's own


def test_item_tables_candidate_term_and_padding_row():
    m = _model().eval()
    with torch.no_grad():
        seq_side, cand = m.item_tables()
        assert (seq_side[0] == 0).all() and (cand[0] == 0).all()
        codes = m.item_codes[1:]
        fused = m.fusion(m.code_emb(codes), m.text_vectors[1:])
        assert torch.allclose(seq_side[1:], fused.mean(1), atol=1e-6)
        assert torch.allclose(cand[1:] - seq_side[1:], m.code_emb(codes).mean(1), atol=1e-6)
        m.candidate_code_term = False
        s2, c2 = m.item_tables()
        assert torch.equal(s2, c2)


def test_text_views_change_the_fused_items_only_with_text_fusion():
    for fusion, changes in ((True, True), (False, False)):
        m = _model(text_fusion=fusion).eval()
        with torch.no_grad():
            before = m.item_tables()[0].clone()
            m.text_vectors.add_(1.0)
            after = m.item_tables()[0]
        assert (not torch.allclose(before, after)) == changes


def test_padding_item_is_never_ranked():
    m = _model().eval()
    b = _batch()
    with torch.no_grad():
        m.on_test_epoch_start()
        scores = m.full_scores(b["seq"], b["lengths"])
        m.on_test_epoch_end()
    assert torch.isinf(scores[:, 0]).all() and (scores[:, 0] < 0).all()
    assert (scores.topk(N, dim=1).indices != 0).all()


def test_rec_loss_full_softmax_and_sampled_by_hand():
    m = _model()
    g = torch.Generator().manual_seed(3)
    user, cand = torch.randn(4, D, generator=g), torch.randn(N + 1, D, generator=g)
    target = torch.tensor([3, 7, 7, 12])
    u, c = F.normalize(user, dim=-1), F.normalize(cand, dim=-1)
    logits = (u @ c.T) / 0.07
    logits[:, 0] = -math.inf  # padding excluded from the softmax
    hand = sum(-torch.log_softmax(logits[i], 0)[target[i]] for i in range(4)) / 4
    assert torch.allclose(m.rec_loss(user, target, cand), hand, atol=1e-5)
    m.neg_num = 5
    torch.manual_seed(9)
    neg = m._negatives(target)
    assert len(neg) == 5 and len(set(neg.tolist())) == 5
    assert not set(neg.tolist()) & {0, 3, 7, 12}  # shared negatives never include a batch target or padding
    torch.manual_seed(9)
    loss = m.rec_loss(user, target, cand)
    rows = torch.cat([(u * c[target]).sum(-1, keepdim=True), u @ c[neg].T], 1) / 0.07
    assert torch.allclose(loss, -torch.log_softmax(rows, 1)[:, 0].mean(), atol=1e-5)


def test_info_nce_by_hand():
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    y = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    s = 1 / math.sqrt(2)
    tau = 0.5
    l0 = -math.log(math.exp(s / tau) / (math.exp(s / tau) + math.exp(0.0)))
    l1 = -math.log(math.exp(1 / tau) / (math.exp(s / tau) + math.exp(1 / tau)))
    assert info_nce(x, y, tau).item() == pytest.approx((l0 + l1) / 2, rel=1e-5)


def test_mcm_predicts_over_the_whole_code_table():
    m = _model()
    g = torch.Generator().manual_seed(4)
    fused = torch.randn(3, C, D, generator=g)
    labels = torch.full((3, C), -100)
    labels[0, 1], labels[2, 3] = 5, 31
    loss = m.mcm_loss(fused, labels)
    table = F.normalize(m.code_emb.weight, dim=-1)  # all C*K+1 rows, padding included (authors)
    assert table.shape[0] == C * K + 1
    hand = []
    for i, j in ((0, 1), (2, 3)):
        logit = F.normalize(fused[i, j], dim=-1) @ table.T / 0.07
        hand.append(-torch.log_softmax(logit, 0)[labels[i, j]])
    assert torch.allclose(loss, torch.stack(hand).mean(), atol=1e-5)


def test_training_step_learns_and_leaves_text_vectors_frozen():
    m = _model(mlm_weight=0.5, cl_weight=0.5)
    text0 = m.text_vectors.clone()
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    b = _batch(b=16)
    m.log = lambda *a, **k: None
    losses = []
    for _ in range(30):
        loss = m.training_step(b, 0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
    assert torch.equal(m.text_vectors, text0) and not any(p is m.text_vectors for p in m.parameters())


def test_bad_inputs_are_one_line_errors():
    codes, text = _inputs()
    with pytest.raises(UserError, match="hidden_size"):
        CoCoRec(num_items=N, item_codes=codes, text_vectors=text, code_vocab=C * K + 1, hidden_size=D * 2)
    with pytest.raises(UserError, match="neg_num"):
        CoCoRec(num_items=N, item_codes=codes, text_vectors=text, code_vocab=C * K + 1, hidden_size=D, neg_num=N)
    with pytest.raises(UserError, match="do not cover"):
        CoCoRec(num_items=N + 5, item_codes=codes, text_vectors=text, code_vocab=C * K + 1, hidden_size=D)


def test_warmup_then_constant_lr():
    m = _model(warmup_steps=4)
    conf = m.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    seen = []
    for _ in range(7):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([0.0, 0.25e-3, 0.5e-3, 0.75e-3, 1e-3, 1e-3, 1e-3])
    assert isinstance(opt, torch.optim.AdamW) and opt.param_groups[0]["weight_decay"] == 1e-4


def test_item_ids_are_stable_across_processes(tmp_path):
    """Item ids never depend on set/dict hash order: two interpreters with different hash seeds
    (the authors' ids came from iterating a Python set) give the same id for every item."""
    import json
    import os
    import subprocess
    import sys

    from tests.test_data import _write_amazon23

    _write_amazon23(tmp_path / "a23")
    d = tmp_path / "office"
    d.mkdir()
    (d / "X.inter.json").write_text(json.dumps({"7": [3, 1, 2], "2": [0, 3], "10": [2, 0, 1]}))
    (d / "X.item.json").write_text(json.dumps({str(i): {"title": f"t{i}"} for i in range(4)}))
    a23 = tmp_path / "a23"
    code = ("import json; from rucai.data.amazon2023 import load_amazon2023; from rucai.data.amazon import load_lcrec; "
            f"a = load_amazon2023(r'{a23}', 'instruments'); b = load_lcrec(r'{d}', 'X'); "
            "print(json.dumps([a.sequences, {i: t['parent_asin'] for i, t in a.item_text.items()}, "
            "b.sequences, b.user_ids]))")
    outs = []
    for seed in ("1", "2"):
        env = os.environ | {"PYTHONHASHSEED": seed}
        r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                           cwd=str(tmp_path), check=True)
        outs.append(r.stdout)
    assert outs[0] == outs[1] and outs[0].strip()


def test_codes_task_reports_code_usage(tmp_path, smoke_data_dir):
    from tests.conftest import run_cli

    r = run_cli("experiment=cocorec/office_cpu", "debug=smoke", "task=cocorec.codes", f"paths.data_dir={smoke_data_dir}",
                run_dir=tmp_path / "run", env={"RUCAI_DATA_DIR": str(smoke_data_dir)})
    assert r.returncode == 0, r.stderr[-3000:]
    m = r.metrics()
    assert m["codes_per_item"] == 12 and m["code_vocab"] == 12 * 16 + 1  # 3 views x 4 codes of 16 (smoke bits=4)
    assert m["distinct_tuples"] + m["items_sharing_a_tuple"] == m["items"]
    assert 1 <= m["mean_codes_used_per_level"] <= 16
