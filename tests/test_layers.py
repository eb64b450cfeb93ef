"""FastDropout (rucai.models.layers): nn.Dropout's semantics with cheaper masks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rucai.models.layers import FastDropout, keep_mask, use_fast_dropout


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
