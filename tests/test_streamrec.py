"""STREAM-Rec: stage-1 targets, the iterative-inference annotator, free-prefix beam search and
sampling, the RL rewards and one GRPO step (hand computations and brute force on tiny models)."""

import itertools

import numpy as np
import pytest
import torch

from rucai.models.tiger import beam_search, sample_sequences
from rucai.streamrec.annotator import ThinkingAnnotator
from rucai.streamrec.model import StreamRec
from rucai.streamrec.rewards import REWARDS, Rollouts, total_reward
from rucai.streamrec.targets import extended_labels, similar_items

CODES = {1: [0, 0, 0], 2: [0, 1, 1], 3: [1, 0, 1], 4: [1, 1, 0], 5: [0, 1, 0]}  # K = 2, tokens 2..7


def tiny(phase="sft", **kw):
    torch.manual_seed(0)
    args = dict(num_items=5, item_codes=CODES, max_len=4, d_model=16, d_kv=8, d_ff=32, num_layers=1,
                num_decoder_layers=1, num_heads=2, num_beams=5, topk=(5,), phase=phase, think_steps=2,
                annotator={"hidden": 8}, rl={"group_size": 3, "kl_coef": 0.1, "rank_negatives": 2,
                                              "rewards": {"format": 1.0, "exact_match": 1.0}})
    if phase == "pretrain":
        args["similar"] = np.array([[0], [2], [1], [4], [3], [2]])
    args.update(kw)
    return StreamRec(**args)


def test_similar_items_by_hand():
    emb = np.array([[0, 0], [1, 0], [0.9, 0.1], [0, 1], [-1, 0]], dtype=np.float32)  # items 1..4
    sim = similar_items(emb, 2)
    assert sim[0].tolist() == [0, 0]
    assert sim[1].tolist() == [2, 3]   # cos(1,2) = 0.994, cos(1,3) = 0, cos(1,4) = -1
    assert sim[3].tolist() == [2, 1]   # cos(3,2) = 0.11, cos(3,1) = 0
    assert sim[4].tolist() == [3, 2]   # -0 beats -0.99 and -1
    with pytest.raises(ValueError):
        similar_items(emb, 4)


def test_extended_targets_hold_the_similar_items_then_the_target():
    item2tok = torch.tensor([[0, 0], [2, 4], [3, 5], [2, 5]])
    similar = torch.tensor([[0, 0], [2, 3], [1, 3], [1, 2]])
    out = extended_labels(item2tok, similar, torch.tensor([1, 3]), eos=1)
    # nearest_last: item 1's neighbours (2 nearest, then 3) as 3, 2, then item 1, then eos
    assert out.tolist() == [[2, 5, 3, 5, 2, 4, 1], [3, 5, 2, 4, 2, 5, 1]]
    first = extended_labels(item2tok, similar, torch.tensor([1]), eos=1, order="nearest_first")
    assert first.tolist() == [[3, 5, 2, 5, 2, 4, 1]]


def test_untrained_annotator_is_residual_quantisation_and_approaches_the_target():
    ann = ThinkingAnnotator(dim=2, steps=3, hidden=4)  # residual MLPs with zeroed output: the identity
    codebook = torch.tensor([[4.0, 0.0], [0.0, 2.0], [1.0, 0.0], [0.0, 0.5], [-3.0, -3.0]])
    s0, t = torch.zeros(1, 2), torch.tensor([[5.2, 2.4]])
    out = ann(s0, t, codebook)
    # r1 = (5.2, 2.4) -> nearest (4, 0)? |(1.2, 2.4)| = 2.68; (0, 2): |(5.2, .4)| = 5.2 -> code 0
    # s1 = (4, 0); r2 = (1.2, 2.4) -> (0, 2): |(1.2, .4)| = 1.26 (vs (1, 0): 2.41) -> code 1
    # s2 = (4, 2); r3 = (1.2, 0.4) -> (1, 0): |(.2, .4)| = .45 (vs (0, .5): 1.2) -> code 2
    assert out["codes"].tolist() == [[0, 1, 2]]
    dist = [float((t - s0).norm())] + (t.unsqueeze(1) - out["states"]).norm(dim=-1)[0].tolist()
    assert dist == pytest.approx([5.727, 2.683, 1.265, 0.447], abs=1e-3)
    assert all(a > b for a, b in zip(dist, dist[1:], strict=False))
    assert torch.isfinite(out["loss"])
    # state_of (RL's similarity reward) gives the same final state from the tokens' embeddings
    assert torch.allclose(ann.state_of(s0, codebook[out["codes"]]), out["states"][:, -1])


def _train_annotator(steps=300, lr=1e-2, **kw):
    """A 3-step annotator trained on a constructed example; mean ||t - s_i|| (i = 1..l) before and after,
    the InfoNCE before and after, and the distinct codes used after."""
    g = torch.Generator().manual_seed(0)
    codebook = torch.randn(32, 8, generator=g)
    t = torch.randn(64, 8, generator=g)
    s0 = torch.randn(64, 8, generator=g) * 0.1
    torch.manual_seed(0)
    ann = ThinkingAnnotator(dim=8, steps=3, hidden=16, **kw)
    opt = torch.optim.Adam(ann.parameters(), lr=lr)
    dist = lambda out: (t.unsqueeze(1) - out["states"]).norm(dim=-1).mean(0).tolist()  # noqa: E731
    out0 = ann(s0, t, codebook)
    for _ in range(steps):
        opt.zero_grad()
        ann(s0, t, codebook)["loss"].backward()
        opt.step()
    out = ann(s0, t, codebook)
    return dist(out0), dist(out), float(out0["nce"]), float(out["nce"]), len(set(out["codes"].flatten().tolist()))


def test_annotator_training_moves_states_toward_their_targets():
    before, after, nce0, nce, used = _train_annotator()
    # untrained (residual quantisation): 2.22, 1.89, 1.82; trained: ~1.96, 1.52, 1.44
    assert all(a < b for a, b in zip(after, before, strict=True)), (before, after)
    assert all(a > b for a, b in zip(after, after[1:], strict=False))  # each token brings the state closer
    assert nce < nce0 - 0.5 and used > 16


def test_straight_through_annotator_diverges():
    # the first Office runs' setting: the states run away from the targets and the codes collapse
    before, after, _, _, used = _train_annotator(straight_through=True, beta=0.25, gamma=0.0)
    assert min(after) > 2 * max(before) and used < 16, (before, after, used)


def test_free_prefix_beam_search_is_exhaustive_on_a_tiny_vocabulary():
    m = tiny().eval()
    trie = m.trie
    ids, mask = m.encode_inputs(torch.tensor([[1, 2, 0, 0]]), torch.tensor([2]))
    C = trie.vocab_size - trie.offset  # 6 code tokens
    items, toks, scores = beam_search(m.t5, trie, ids, mask, num_beams=C * 5, free_prefix=1)
    assert (items >= 0).all() and toks.shape == (1, 30, 4)
    # brute force: every (thinking token, item) pair scored by teacher forcing
    want = {}
    for think, item in itertools.product(range(trie.offset, trie.vocab_size), CODES):
        labels = torch.cat([torch.tensor([[think]]), m.item2tok[[item]]], 1)
        logits = m.t5(input_ids=ids, attention_mask=mask, labels=labels).logits
        lp = torch.log_softmax(logits.float(), -1)[0]
        # the item levels are renormalised by nothing (HF semantics: mask after log_softmax)
        want[(think, item)] = float(lp.gather(-1, labels[0, :, None]).sum())
    got = {(int(tk[0]), int(it)): float(s) for tk, it, s in zip(toks[0], items[0], scores[0], strict=True)}
    assert set(got) == set(want)
    for k, v in want.items():
        assert got[k] == pytest.approx(v, abs=1e-4)
    # the thinking token is free: prefixes from every level's range appear
    assert {int(t) for t in toks[0, :, 0]} == set(range(trie.offset, trie.vocab_size))
    # without a prefix: exactly TIGER's beam search
    a = beam_search(m.t5, trie, ids, mask, num_beams=5)
    b = beam_search(m.t5, trie, ids, mask, num_beams=5, free_prefix=0)
    assert torch.equal(a[0], b[0])


def test_sampling_ends_on_items_and_thinking_tokens_are_codes():
    m = tiny().eval()
    ids, mask = m.encode_inputs(torch.tensor([[1, 2, 0, 0], [3, 0, 0, 0]]), torch.tensor([2, 1]))
    g = torch.Generator().manual_seed(1)
    items, toks = sample_sequences(m.t5, m.trie, ids, mask, n=7, free_prefix=2, generator=g)
    assert items.shape == (2, 7) and toks.shape == (2, 7, 5)
    assert (items >= 1).all()
    assert ((toks[..., :2] >= 2) & (toks[..., :2] < m.trie.vocab_size)).all()
    for it, tk in zip(items.flatten().tolist(), toks.reshape(-1, 5).tolist(), strict=True):
        assert m.trie.item_of(tk[2:]) == it


class _Scores:
    """A stand-in policy for the likelihood rewards: fixed item scores per candidate id."""

    def __init__(self, table, num_levels=3, think_steps=2, num_items=5):
        self.table, self.num_levels, self.think_steps, self.num_items = table, num_levels, think_steps, num_items
        self.rl = {"rank_negatives": 4}

    def score_items(self, ids, mask, think, items):
        return self.table[items]


def test_rewards_on_hand_cases():
    m = tiny()
    tok = m.item2tok
    think = torch.tensor([[2, 7], [3, 4], [0, 4]])  # the third holds pad: not a code token
    gen = torch.stack([tok[2], tok[5], tok[1]])  # item 2 | item 5 (codes 0,1,0) | item 1
    r = Rollouts(model=m, ids=None, mask=None, tokens=torch.cat([think, gen], 1),
                 items=torch.tensor([2, 5, 1]), target=torch.tensor([2, 2, 3]))
    # exact match: item 2 = target; 5 = (0,1,0) vs 2 = (0,1,1): 2 of 3 leading; 1 vs 3: none
    assert REWARDS.lookup("exact_match")(r).tolist() == pytest.approx([1.0, 2 / 3, 0.0])
    assert REWARDS.lookup("format")(r).tolist() == [0.0, 0.0, -1.0]
    bad = Rollouts(model=m, ids=None, mask=None, tokens=torch.cat([think[:1], gen[:1]], 1),
                   items=torch.tensor([-1]), target=torch.tensor([2]))
    assert REWARDS.lookup("format")(bad).tolist() == [-1.0]
    comps, total = total_reward(r, {"format": 2.0, "exact_match": 1.0})
    assert total.tolist() == pytest.approx([1.0, 2 / 3, -2.0])
    # likelihood rewards with fixed scores: item i scores -i (log p summed over 3 codes)
    fake = _Scores(-torch.arange(6.0))
    rr = Rollouts(model=fake, ids=None, mask=None, tokens=torch.zeros(2, 5, dtype=torch.long),
                  items=torch.tensor([1, 1]), target=torch.tensor([1, 3]))
    assert REWARDS.lookup("think_likelihood")(rr).tolist() == pytest.approx([np.exp(-1 / 3), np.exp(-1.0)])
    torch.manual_seed(0)
    rank = REWARDS.lookup("think_rank")(rr)
    assert rank[0] == 1.0  # item 1 outscores every other item
    assert 0.0 <= rank[1] <= 1.0
    with pytest.raises(Exception, match="unknown streamrec reward='nope'"):
        total_reward(r, {"nope": 1.0})


def test_similarity_reward_is_the_annotator_state_against_the_target():
    m = tiny().eval()
    ids, mask = m.encode_inputs(torch.tensor([[1, 2, 0, 0]]), torch.tensor([2]))
    think = m.thinking_tokens(ids, mask, torch.tensor([3]))
    r = Rollouts(model=m, ids=ids, mask=mask, tokens=torch.cat([think, m.item2tok[[3]]], 1),
                 items=torch.tensor([3]), target=torch.tensor([3]))
    s0, t = m.anchor_views(ids, mask, torch.tensor([3]))
    out = m.annotator(s0, t, m.codebook().float())
    want = torch.nn.functional.cosine_similarity(out["states"][:, -1], t)
    assert REWARDS.lookup("similarity")(r).tolist() == pytest.approx(want.tolist(), abs=1e-5)


def test_sft_labels_are_thinking_tokens_then_the_target():
    m = tiny().eval()
    batch = {"seq": torch.tensor([[1, 2, 0, 0]]), "lengths": torch.tensor([2]), "target": torch.tensor([4])}
    ids, mask = m.model_inputs(batch)
    lab = m.labels(batch, ids, mask)
    assert lab.shape == (1, 2 + 3 + 1)
    assert ((lab[0, :2] >= 2) & (lab[0, :2] < m.trie.vocab_size)).all()
    assert lab[0, 2:].tolist() == m.item2tok[4].tolist() + [1]
    assert m.decode_prefix() == 2
    p = tiny("pretrain")
    assert p.labels(batch, ids, mask)[0].tolist() == p.item2tok[3].tolist() + p.item2tok[4].tolist() + [1]
    assert p.decode_prefix() == 3


def test_grpo_step_updates_the_policy_only():
    m = tiny("rl")
    m.ref.load_state_dict(m.t5.state_dict())
    m.train()
    assert not m.anchor.training and not m.ref.training
    batch = {"seq": torch.tensor([[1, 2, 0, 0], [3, 4, 5, 0]]), "lengths": torch.tensor([2, 3]),
             "target": torch.tensor([4, 1])}
    m.log = lambda *a, **k: None
    torch.manual_seed(0)
    loss = m.training_step(batch, 0)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.t5.parameters())
    for part in (m.anchor, m.ref, m.annotator):
        assert all(p.grad is None for p in part.parameters())
    opt = m.configure_optimizers()
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(m.t5.parameters()))


def test_pipeline_phases_chain_and_are_reused(tmp_path, smoke_data_dir):
    import json

    from tests.conftest import run_cli

    common = ["experiment=streamrec/office_cpu", "debug=smoke", "hardware=cpu", f"paths.data_dir={smoke_data_dir}"]
    env = {"RUCAI_DATA_DIR": str(smoke_data_dir)}
    run = tmp_path / "run"
    r = run_cli(*common, "task=streamrec.sft", run_dir=run, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    pre = json.loads((run / "pretrain" / "done.json").read_text())["result"]
    assert pre["test_ckpt"].startswith(str(run / "pretrain" / "checkpoints"))
    assert (run / "annotator" / "annotator.pt").is_file() and (run / "sft" / "done.json").is_file()
    before = (run / "sft" / "done.json").stat().st_mtime
    r = run_cli(*common, run_dir=run, env=env)  # the pipeline: reuses pretrain, annotator and sft, then RL
    assert r.returncode == 0, r.stderr[-3000:]
    m = r.metrics()
    assert (run / "sft" / "done.json").stat().st_mtime == before
    for phase in ("pretrain", "sft", "rl"):
        assert f"{phase}/test/recall@5" in m
    assert m["test/recall@5"] == m["rl/test/recall@5"] and "annotator/distance_step2" in m
    assert "train/reward_format" in (run / "csv" / "metrics.csv").read_text()  # the run's logger has the rewards


@pytest.mark.parametrize("exp", ["streamrec/instruments", "streamrec/scientific"])
def test_gpu_configs_stop_in_one_line_without_a_gpu(exp, tmp_path, smoke_data_dir):
    from tests.conftest import run_cli

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    r = run_cli(f"experiment={exp}", "hardware=gpu", f"paths.data_dir={smoke_data_dir}", run_dir=tmp_path / "run",
                env={"RUCAI_DATA_DIR": str(smoke_data_dir)}, timeout=120)
    last = [ln for ln in r.stderr.splitlines() if ln.strip()][-1]
    assert r.returncode == 2 and "none visible" in last, r.stderr[-2000:]


def test_dpo_loss_by_hand():
    from rucai.streamrec.model import dpo_loss

    z = torch.zeros(3)
    loss, margin = dpo_loss(z, z, z, z, beta=0.1)
    assert torch.allclose(loss, torch.tensor(np.log(2.0), dtype=torch.float32))  # no preference yet: log 2
    w, l_, rw, rl = torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-2.5])
    loss, margin = dpo_loss(w, l_, rw, rl, beta=0.5)
    m = 0.5 * ((-1.0 + 2.0) - (-3.0 + 2.5))  # 0.75
    assert margin.item() == pytest.approx(m) and loss.item() == pytest.approx(np.log1p(np.exp(-m)))


def test_sft_dpo_against_the_direct_model():
    m = tiny("sft", dropout=0.0, dpo={"weight": 1.0, "beta": 0.1, "direct_similar_items": 1})
    m.anchor.load_state_dict(m.t5.state_dict())  # SFT starts from the stage-1 model (= reference)
    m.train()
    logged = {}
    m.log = lambda k, v, **kw: logged.__setitem__(k, float(v))
    batch = {"seq": torch.tensor([[1, 2, 0, 0], [3, 4, 5, 0], [2, 3, 0, 0]]), "lengths": torch.tensor([2, 3, 2]),
             "target": torch.tensor([4, 1, 5])}
    ids, mask = m.model_inputs(batch)
    direct = m.direct_items(ids, mask)  # the stage-1 model's own prediction: always an item
    assert direct.shape == (3,) and ((direct >= 1) & (direct <= 5)).all()
    m.direct_items = lambda ids, mask: batch["target"] % 5 + 1  # a wrong item for every user
    loss = m.training_step(batch, 0)
    assert logged["train/dpo_pairs"] == 1.0
    # policy == reference at the start: every margin is 0, the DPO term is log 2
    assert logged["train/dpo"] == pytest.approx(np.log(2.0), abs=1e-5)
    assert loss.item() == pytest.approx(logged["train/sft_ce"] + np.log(2.0), abs=1e-4)
    loss.backward()
    assert all(p.grad is None for p in m.anchor.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.t5.parameters())
    # rows where the direct model predicts the target are no pair
    logged.clear()
    m.direct_items = lambda ids, mask: batch["target"].clone()
    labels = m.labels(batch, ids, mask)
    assert float(m.dpo_step(batch["target"], ids, mask, labels)) == 0.0 and logged["train/dpo_pairs"] == 0.0
