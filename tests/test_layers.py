"""FastDropout (nn.Dropout's semantics with cheaper masks) and the chunked linear cross-entropy (rucai.models.layers)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rucai.models.layers import FastDropout, keep_mask, linear_cross_entropy, use_fast_dropout


def test_drop_rate_and_scale_match_nn_dropout():
    torch.manual_seed(0)
    d = FastDropout(0.1).train()
    y = d(torch.ones(400_000))
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.9) < 0.003  # 3 sigma of Binomial(4e5, 0.9) is 0.0014
    assert torch.allclose(y[kept], torch.full_like(y[kept], 65536 / (65536 - 6554)))  # 1 / (1 - q), q = 6554/65536
    assert abs(y.mean().item() - 1.0) < 0.004  # unbiased


def test_gradient_is_the_same_mask_and_scale():
    torch.manual_seed(1)
    x = torch.randn(50, 30, requires_grad=True)
    y = FastDropout(0.3).train()(x)
    y.backward(torch.ones_like(y))
    keep = y.detach() != 0
    scale = 1 / (1 - round(0.3 * 65536) / 65536)
    assert torch.allclose(x.grad, keep.float() * scale)
    assert torch.allclose(y.detach(), x.detach() * keep * scale)


def test_eval_mode_and_zero_p_are_identity():
    x = torch.randn(10, 4)
    assert torch.equal(FastDropout(0.5).eval()(x), x)
    assert torch.equal(FastDropout(0.0).train()(x), x)
    with pytest.raises(ValueError):
        FastDropout(1.0)


def test_mask_bits_are_uniform():
    torch.manual_seed(2)
    m = keep_mask(torch.Size([200_000]), 0.5, torch.device("cpu"))
    assert abs(m.float().mean().item() - 0.5) < 0.005
    # the four 16-bit slices of each 64-bit word are independent: each position keeps ~half
    per_slot = m.view(-1, 4).float().mean(0)
    assert (per_slot - 0.5).abs().max() < 0.01


def test_replaces_every_dropout_module():
    net = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.2), nn.Sequential(nn.Dropout(0.1), nn.ReLU()))
    assert use_fast_dropout(net) == 2
    assert [m.p for m in net.modules() if isinstance(m, FastDropout)] == [0.2, 0.1]
    assert not any(type(m) is nn.Dropout for m in net.modules())


def test_linear_cross_entropy_hand_case():
    # q = [[1, 0], [0, 2]], w = [[1, 0], [0, 1], [1, 1]]: logits [[1, 0, 1], [0, 2, 2]]
    q = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    loss = linear_cross_entropy(q, w, torch.tensor([0, 1]), chunk=1)
    row0 = math.log(math.e + 1 + math.e) - 1
    row1 = math.log(1 + 2 * math.e**2) - 2
    assert loss.item() == pytest.approx((row0 + row1) / 2, rel=1e-6)


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
def test_linear_cross_entropy_matches_full_logits_values_and_gradients(chunk):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(50, 8, generator=g, requires_grad=True)
    w = torch.randn(13, 8, generator=g, requires_grad=True)
    y = torch.randint(0, 13, (50,), generator=g)
    ref = F.cross_entropy(q @ w.T, y)
    ref_grads = torch.autograd.grad(ref * 3, [q, w])
    out = linear_cross_entropy(q, w, y, chunk=chunk)
    grads = torch.autograd.grad(out * 3, [q, w])
    assert torch.allclose(out, ref, atol=1e-6)
    for a, b in zip(grads, ref_grads, strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_linear_cross_entropy_under_bf16_autocast_is_fp32():
    g = torch.Generator().manual_seed(1)
    q = torch.randn(20, 8, generator=g, requires_grad=True)
    w = torch.randn(5, 8, generator=g, requires_grad=True)
    y = torch.randint(0, 5, (20,), generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = linear_cross_entropy(q.to(torch.bfloat16), w, y)
    assert out.dtype == torch.float32
    ref = F.cross_entropy(q.to(torch.bfloat16).float() @ w.T, y)  # outside autocast: an fp32 matmul
    assert torch.allclose(out, ref, atol=1e-5)
    out.backward()
    assert q.grad is not None and w.grad is not None and w.grad.dtype == torch.float32
