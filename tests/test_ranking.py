import math

import pytest
import torch

from rucai.eval.ranking import target_ranks, topk_metrics


def test_ranks_and_metrics_by_hand():
    scores = torch.tensor([[float("-inf"), 0.9, 0.1, 0.5, 0.3],   # target 3 -> rank 1
                           [float("-inf"), 0.2, 0.8, 0.1, 0.0]])  # target 4 -> rank 3
    ranks = target_ranks(scores, torch.tensor([3, 4]))
    assert ranks.tolist() == [1, 3]
    m = topk_metrics(ranks, [1, 2, 5])
    assert m["recall@1"].tolist() == [0.0, 0.0]
    assert m["recall@2"].tolist() == [1.0, 0.0]
    assert m["recall@5"].tolist() == [1.0, 1.0]
    assert math.isclose(m["ndcg@2"][0].item(), 1 / math.log2(3), rel_tol=1e-6)
    assert math.isclose(m["ndcg@5"][1].item(), 1 / math.log2(5), rel_tol=1e-6)


def test_ties_are_pessimistic_and_masked_items_never_outrank():
    scores = torch.zeros(1, 6)
    scores[0, 0] = float("-inf")
    ranks = target_ranks(scores, torch.tensor([2]))
    assert ranks.item() == 4  # ties with the other 4 finite items, counted against the target
    scores = torch.full((1, 6), float("-inf"))
    scores[0, 5] = 1.0
    assert target_ranks(scores, torch.tensor([5])).item() == 0


def test_metrics_match_a_brute_force_sort():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(64, 50, generator=g)
    target = torch.randint(0, 50, (64,), generator=g)
    ranks = target_ranks(scores, target)
    order = scores.argsort(dim=1, descending=True)
    expected = (order == target[:, None]).float().argmax(dim=1)
    assert torch.equal(ranks, expected)
    m = topk_metrics(ranks, [10])
    ndcg = [(1 / math.log2(r + 2) if r < 10 else 0.0) for r in expected.tolist()]
    assert torch.allclose(m["ndcg@10"], torch.tensor(ndcg))


def test_auc_by_hand():
    from rucai.eval.ranking import auc

    # pairs (pos, neg): (.9,.1) (.9,.5) (.5,.1) win, (.5,.5) tie, (.2,.1) win, (.2,.5) loss -> 4.5 / 6
    assert auc([0.9, 0.5, 0.2], [0.1, 0.5]) == pytest.approx(4.5 / 6)
    assert auc([1.0], [0.0, 0.5]) == 1.0 and auc([0.0], [1.0]) == 0.0
    with pytest.raises(ValueError):
        auc([], [0.1])
