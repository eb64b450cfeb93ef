"""UTGRec tokenizer core: tree SimVQ on differences, warm-up, losses, InfoNCE, collisions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rucai.utgrec.collisions import collision_rate, resolve_collisions
from rucai.utgrec.quantizer import SimVQCodebook, TreeQuantizer, cumulative, differences
from rucai.utgrec.tokenizer import TextUTGTokenizer, code_info_nce, info_nce


def set_codebook(book: SimVQCodebook, entries: torch.Tensor) -> None:
    """Make W(E) == entries: E = entries, W = identity."""
    with torch.no_grad():
        book.code_embs.copy_(entries)
        book.proj.weight.copy_(torch.eye(book.dim))


def test_differences_cumulative_inverse():
    h = torch.randn(4, 3, 5)
    d = differences(h)
    assert torch.allclose(d[:, 1], h[:, 1] - h[:, 0]) and torch.allclose(d[:, 0], h[:, 0])
    assert torch.allclose(cumulative(d), h, atol=1e-6)


def test_round_trip_when_codebooks_hold_the_differences():
    torch.manual_seed(0)
    quant = TreeQuantizer(root_codes=4, leaf_codes=6, dim=3, warmup_steps=-1).eval()
    h = torch.randn(2, 3, 3)
    d = differences(h)
    root = torch.randn(4, 3) * 10
    root[[1, 3]] = d[:, 0]
    leaf = torch.randn(6, 3) * 10
    leaf[[0, 5]] = d[0, 1:]
    leaf[[2, 4]] = d[1, 1:]
    set_codebook(quant.root, root)
    set_codebook(quant.leaf, leaf)
    q, loss, codes = quant(h)
    assert torch.allclose(q, h, atol=1e-5)
    assert codes.tolist() == [[1, 0, 5], [3, 2, 4]]
    assert loss.item() == pytest.approx(0.0, abs=1e-10)
    # without warm-up bypass the output is NOT h when the codebooks miss the differences
    set_codebook(quant.leaf, torch.randn(6, 3) * 10)
    assert not torch.allclose(quant(h)[0], h, atol=1e-3)


def test_levels_2_and_3_share_the_leaf_codebook():
    quant = TreeQuantizer(root_codes=2, leaf_codes=3, dim=1, warmup_steps=-1).eval()
    set_codebook(quant.root, torch.tensor([[0.0], [100.0]]))
    set_codebook(quant.leaf, torch.tensor([[-1.0], [1.0], [7.0]]))
    # d = (100, 7, -1): level 1 -> root 1, level 2 -> leaf 2, level 3 -> leaf 0
    h = torch.tensor([[[100.0], [107.0], [106.0]]])
    q, _, codes = quant(h)
    assert codes.tolist() == [[1, 2, 0]]
    assert torch.allclose(q, h)
    # one leaf book: rescaling it moves level 2 and level 3 together
    assert len([m for m in quant.modules() if isinstance(m, SimVQCodebook)]) == 2
    with torch.no_grad():
        quant.leaf.code_embs.mul_(2)  # leaf (-2, 2, 14): d2 = 7 -> 2 (entry 1), d3 = -1 -> -2 (0)
    q2, _, codes2 = quant(h)
    assert codes2.tolist() == [[1, 1, 0]]
    assert torch.allclose(q2[0, :, 0], torch.tensor([100.0, 102.0, 100.0]))


def test_simvq_codebook_is_w_of_e():
    book = SimVQCodebook(5, 4)
    assert book.proj.bias is None
    assert torch.allclose(book.weight(), book.code_embs @ book.proj.weight.t())


def test_with_e_frozen_only_w_changes():
    torch.manual_seed(1)
    quant = TreeQuantizer(root_codes=4, leaf_codes=4, dim=3, warmup_steps=-1)
    quant.freeze_code_embs()
    trainable = [p for p in quant.parameters() if p.requires_grad]
    assert {id(p) for p in trainable} == {id(quant.root.proj.weight), id(quant.leaf.proj.weight)}
    before = {k: v.clone() for k, v in quant.state_dict().items()}
    opt = torch.optim.SGD(trainable, lr=0.5)
    _, loss, _ = quant(torch.randn(8, 3, 3))
    loss.backward()
    assert quant.root.code_embs.grad is None and quant.leaf.code_embs.grad is None
    assert quant.root.proj.weight.grad.abs().sum() > 0
    opt.step()
    after = quant.state_dict()
    assert torch.equal(before["root.code_embs"], after["root.code_embs"])
    assert torch.equal(before["leaf.code_embs"], after["leaf.code_embs"])
    assert not torch.equal(before["root.proj.weight"], after["root.proj.weight"])
    assert not torch.equal(before["leaf.proj.weight"], after["leaf.proj.weight"])


def test_warmup_bypass_and_counter_survive_state_dict():
    torch.manual_seed(2)
    quant = TreeQuantizer(root_codes=4, leaf_codes=4, dim=3, warmup_steps=2)
    h = torch.randn(5, 3, 3, requires_grad=True)
    outs = [quant(h) for _ in range(3)]  # steps 0, 1, 2 <= 2: bypassed (authors' `<=`)
    for q, loss, _ in outs:
        assert torch.equal(q, h) and loss.item() == 0.0
    outs[0][0].sum().backward()  # as the authors: h passes through, the codebooks get no grad
    assert torch.equal(h.grad, torch.ones_like(h))
    assert quant.leaf.proj.weight.grad is None and quant.root.code_embs.grad is None
    assert int(quant.step) == 3 and not quant.in_warmup()
    quant.eval()
    quant(h)
    assert int(quant.step) == 3  # no advance outside training
    fresh = TreeQuantizer(root_codes=4, leaf_codes=4, dim=3, warmup_steps=2)
    assert fresh.in_warmup()
    fresh.load_state_dict(quant.state_dict())
    assert int(fresh.step) == 3 and fresh.in_warmup() == quant.in_warmup() is False
    q, loss, _ = fresh(h)
    assert not torch.equal(q, h) and loss.item() > 0


def test_vq_loss_by_hand_1d():
    quant = TreeQuantizer(root_codes=2, leaf_codes=2, dim=1, beta=0.25, warmup_steps=-1)
    set_codebook(quant.root, torch.tensor([[0.0], [4.0]]))
    set_codebook(quant.leaf, torch.tensor([[0.0], [10.0]]))
    # h = (3, 4, 13): d = (3, 1, 9) -> root 4 (err 1), leaf 0 (err 1), leaf 10 (err 1)
    h = torch.tensor([[[3.0], [4.0], [13.0]]])
    q, loss, codes = quant(h)
    assert codes.tolist() == [[1, 0, 1]]
    assert torch.allclose(q[0, :, 0], torch.tensor([4.0, 4.0, 14.0]))
    # root: mse 1 + 0.25 * 1; leaf: mean(1, 1) + 0.25 * mean(1, 1); VQ loss = their mean
    assert loss.item() == pytest.approx(1.25)
    h2 = torch.tensor([[[2.0], [4.0], [13.0]]])  # d = (2, 2, 9): root err 2 (->0 or 4: 0 first)
    _, loss2, codes2 = quant(h2)
    assert codes2.tolist() == [[0, 0, 1]]
    # root (2-0)^2 = 4 -> 5; leaf (2-0)^2 = 4, (9-10)^2 = 1 -> 2.5 * 1.25 = 3.125; mean 4.0625
    assert loss2.item() == pytest.approx((5.0 + 3.125) / 2)


def test_info_nce_by_hand_2x2():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    b = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    s = 1 / math.sqrt(2)
    # cosines: row0 (s, 0), row1 (s, 1); tau 0.1
    l0 = -(s / 0.1) + math.log(math.exp(s / 0.1) + math.exp(0.0))
    l1 = -(1 / 0.1) + math.log(math.exp(s / 0.1) + math.exp(1 / 0.1))
    assert info_nce(a, b, 0.1).item() == pytest.approx((l0 + l1) / 2, rel=1e-5)
    # one direction only (the authors'): swapping anchor and positive changes the value
    assert info_nce(b, a, 0.1).item() != pytest.approx(info_nce(a, b, 0.1).item(), rel=1e-3)
    # per code position, averaged
    x = torch.stack([a, b], dim=1)
    y = torch.stack([b, b], dim=1)
    expect = (info_nce(a, b).item() + info_nce(b, b).item()) / 2
    assert code_info_nce(x, y).item() == pytest.approx(expect, rel=1e-6)


def test_collisions_unique_and_non_colliding_unchanged():
    codes = np.array([[0, 1, 2], [0, 1, 2], [0, 1, 2], [1, 0, 0], [0, 1, 3]])
    dist = np.array([
        [5.0, 4.0, 0.5, 3.0, 9.0],   # nearest 2, then 3 (taken by item 4), then 1
        [5.0, 4.0, 0.1, 3.0, 9.0],   # closest to entry 2: keeps its tuple
        [5.0, 4.0, 0.3, 9.0, 1.0],   # next-nearest 4
        [0.0, 1.0, 2.0, 3.0, 4.0],
        [1.0, 1.0, 1.0, 0.0, 1.0],
    ])
    out = resolve_collisions(codes, dist, seed=0)
    assert len({tuple(r) for r in out.tolist()}) == len(out)
    assert out[1].tolist() == [0, 1, 2]
    assert out[2].tolist() == [0, 1, 4]
    assert out[3].tolist() == codes[3].tolist() and out[4].tolist() == codes[4].tolist()
    assert out[0].tolist() == [0, 1, 1]  # round 2 -> 3 (taken) -> round 3 -> 1
    assert collision_rate(codes) == pytest.approx(0.4) and collision_rate(out) == 0.0


def test_collisions_random_tail_is_seeded_and_unique():
    g = np.random.default_rng(0)
    codes = np.zeros((12, 3), dtype=np.int64)  # every item collides, 4 leaf entries
    dist = g.random((12, 4))
    a = resolve_collisions(codes, dist, seed=3)
    b = resolve_collisions(codes, dist, seed=3)
    assert np.array_equal(a, b)
    assert len({tuple(r) for r in a.tolist()}) == 12
    assert (a[:, 0] == 0).all()
    with pytest.raises(ValueError, match="17 items but the codebooks hold only 1 x 4"):
        resolve_collisions(np.zeros((17, 3), dtype=np.int64), g.random((17, 4)))


def test_collisions_overflow_a_full_first_code_into_the_next():
    # 18 items crowd under first code 2 of 3; its subtree holds 4 x 4 = 16 tuples
    g = np.random.default_rng(1)
    codes = np.zeros((18, 3), dtype=np.int64)
    codes[:, 0] = 2
    out = resolve_collisions(codes, g.random((18, 4)), seed=0, first_codes=3)
    assert len({tuple(r) for r in out.tolist()}) == 18
    assert (out[:, 0] == 2).sum() == 16
    # the two left over take the first free tuples of the next first code, cyclically: 0
    assert sorted(tuple(r) for r in out.tolist() if r[0] != 2) == [(0, 0, 0), (0, 0, 1)]


V, S, T = 50, 6, 5


def tiny_model(**kw):
    torch.manual_seed(0)
    emb = torch.randn(V, 384) * 0.1
    args = dict(head_layers=1, head_heads=2, adapter_hidden=32, code_dim=8, root_codes=8,
                leaf_codes=8, warmup_steps=-1, decoder_heads=2, max_text_len=16)
    args.update(kw)
    return TextUTGTokenizer(emb, **args)


def tiny_batch(b=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    batch = {"item": torch.arange(b)}
    for p in ("", "pos_"):
        states = torch.randn(b, T, 384, generator=g)
        mask = torch.ones(b, T, dtype=torch.bool)
        mask[0, -2:] = False
        text = torch.randint(1, V, (b, S), generator=g)
        labels = torch.full((b, S), -100)
        labels[:, 1:4] = torch.randint(1, V, (b, 3), generator=g)
        tmask = torch.ones(b, S, dtype=torch.bool)
        tmask[1, -1] = False
        batch.update({f"{p}states": states, f"{p}state_mask": mask, f"{p}text_input": text,
                      f"{p}text_labels": labels, f"{p}text_mask": tmask})
    return batch


def test_losses_finite_and_training_reduces_total():
    model = tiny_model(warmup_steps=1)
    batch = tiny_batch()
    out = model.losses(batch)
    assert out["warmup"].item() == 1.0 and out["vq"].item() == 0.0
    for k in ("loss", "text", "text_pos", "vq", "cl", "image"):
        assert torch.isfinite(out[k]), k
    assert out["image"].item() == 0.0
    expect = out["text"] + 0.03 * out["text_pos"] + 200 * out["vq"] + 0.01 * out["cl"]
    assert out["loss"].item() == pytest.approx(expect.item(), rel=1e-6)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    model.losses(batch)  # second warm-up step
    model.eval()
    first = model.losses(batch)["loss"].item()
    model.train()
    for _ in range(30):
        opt.zero_grad()
        out = model.losses(batch)
        assert out["warmup"].item() == 0.0
        out["loss"].backward()
        opt.step()
    model.eval()
    last = model.losses(batch)["loss"].item()
    assert math.isfinite(last) and last < first


def test_no_labels_gives_zero_text_loss_not_nan():
    model = tiny_model()
    batch = tiny_batch()
    batch["pos_text_labels"][:] = -100
    out = model.losses(batch)
    assert out["text_pos"].item() == 0.0 and torch.isfinite(out["loss"])


def test_codes_eval_no_bypass_and_adaptation_switch():
    model = tiny_model(warmup_steps=100)
    batch = tiny_batch()
    enc = model.encode(batch)
    assert enc["codes"].shape == (4, 3) and enc["codes"].dtype == torch.long
    assert enc["leaf_distances"].shape == (4, 8)
    assert torch.equal(enc["codes"][:, 2], enc["leaf_distances"].argmin(-1))
    assert model.training and int(model.quantizer.step) == 0
    assert torch.equal(model.codes(batch), enc["codes"])
    model.start_adaptation()
    assert not model.quantizer.in_warmup()
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"quantizer.root.code_embs", "quantizer.leaf.code_embs"}


def test_missing_batch_key_is_named():
    model = tiny_model()
    batch = tiny_batch()
    del batch["pos_text_mask"]
    with pytest.raises(KeyError, match="pos_text_mask"):
        model.losses(batch)
