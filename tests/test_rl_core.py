"""The shared RL core (rucai.rl): R1-Searcher's advantages, KL and loss moved out of
rucai/r1searcher/rl.py unchanged. The expected values below were printed by the pre-refactor
functions (rucai.r1searcher.rl at 8187b37) on the same inputs; the hand checks cover the maths."""

import math

import pytest
import torch

from rucai.errors import UserError
from rucai.rl.core import group_advantages, kl_k1, kl_k3, minibatches, policy_loss, token_advantages
from rucai.rl.rewards import RewardRegistry

R = [1.0, 0.0, 0.5, 0.5, 2.0, 1.0, 1.0, 0.0]
MASKS = [[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 1, 1], [1, 1, 1], [1, 0, 1], [1, 1, 0], [0, 0, 1]]
KL = [[0.1 * i, 0.05, -0.02] for i in range(8)]

BEFORE = {  # printed by rucai.r1searcher.rl before the refactor
    "grpo": [1.224745, -1.224745, 0.0, 0.0, 1.224745, 0.0, 0.0, -1.224745],
    "reinforce_pp_baseline": [0.5, -0.5, 0.0, 0.0, 1.0, 0.0, 0.0, -1.0],
    ("grpo", "reward"): [[1.219745, 1.219745, 1.224745], [-1.234745, -1.224745, -1.224745], [-0.023, -0.003, 0.002],
                         [-0.003, -0.003, 0.002], [1.181745, 1.221745, 1.226745], [-0.048, 0.002, 0.002],
                         [-0.065, -0.005, 0.0], [-1.222745, -1.222745, -1.222745]],
    ("reinforce_pp_baseline", "reward"): [
        [0.674986, 0.674986, 0.68459], [-1.255261, -1.236055, -1.236055], [-0.319907, -0.281494, -0.271891],
        [-0.281494, -0.281494, -0.271891], [1.562324, 1.63915, 1.648753], [-0.367923, -0.271891, -0.271891],
        [-0.400574, -0.285336, -0.275733], [-2.192536, -2.192536, -2.192536]],
    ("reinforce_pp_baseline", "loss"): [
        [0.658553, 0.658553, 0.658553], [-1.257237, -1.257237, -1.257237], [-0.299342] * 3, [-0.299342] * 3,
        [1.616448, 1.616448, 1.616448], [-0.299342] * 3, [-0.299342] * 3, [-2.215132, -2.215132, -2.215132]],
}


@pytest.mark.parametrize("algo", ["grpo", "reinforce_pp_baseline"])
def test_advantages_match_the_pre_refactor_values(algo):
    a = group_advantages(R, 4, algo)
    assert a == pytest.approx(BEFORE[algo], abs=1e-6)
    for mode in ("reward", "loss"):
        key = (algo, mode)
        t = token_advantages(a, MASKS, algo, KL, 0.1, mode)
        if key in BEFORE:
            assert [x for row in t for x in row] == pytest.approx([x for row in BEFORE[key] for x in row], abs=1e-6)
        else:  # grpo + kl in the loss: the sequence advantage on every token
            assert t == [[x] * 3 for x in a]


def test_r1searcher_uses_the_shared_core():
    import rucai.r1searcher.rl as r1

    for name in ("group_advantages", "token_advantages", "kl_k1", "policy_loss", "minibatches"):
        assert getattr(r1, name) is globals()[name]


def test_group_advantages_by_hand():
    # group (1, 0, 0.5, 0.5): mean 0.5, sample std sqrt(0.5 / 3)
    std = math.sqrt(0.5 / 3)
    assert group_advantages([1.0, 0.0, 0.5, 0.5], 4, "grpo")[0] == pytest.approx(0.5 / (std + 1e-9))
    with pytest.raises(ValueError):
        group_advantages([1.0, 2.0, 3.0], 2, "grpo")


def test_kl_estimates_by_hand():
    assert kl_k1([[-1.0, -2.0]], [[-1.5, -2.0]]) == [[0.5, 0.0]]
    lp, ref = torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -2.0])
    # d = ref - lp = (-0.5, 0): exp(-0.5) + 0.5 - 1, 0
    assert kl_k3(lp, ref).tolist() == pytest.approx([math.exp(-0.5) - 0.5, 0.0])


def test_policy_loss_and_schedule_match_the_pre_refactor_values():
    lp = torch.tensor([[-1.0, -2.0], [-0.5, -0.1]])
    old = torch.tensor([[-1.2, -1.5], [-0.5, -0.4]])
    adv = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])
    m = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    assert float(policy_loss(lp, old, adv, m, 0.2, "seq_mean")[0]) == pytest.approx(0.048367, abs=1e-6)
    assert float(policy_loss(lp, old, adv, m, 0.2, "token_mean")[0]) == pytest.approx(-0.268844, abs=1e-6)
    assert minibatches(8, 4, 2, 7) == [[6, 7, 2, 4], [0, 3, 1, 5], [3, 2, 7, 1], [6, 0, 4, 5]]


def test_reward_registry_registers_and_refuses_unknown_names():
    reg = RewardRegistry("streamrec reward")

    @reg.register("one")
    def one(*_):
        return 1.0

    assert reg.lookup("one") is one
    with pytest.raises(UserError, match="unknown streamrec reward='two'; valid: one"):
        reg.lookup("two")
    with pytest.raises(ValueError):
        reg.register("one")(lambda: 2.0)
