import json
import math
import random

import lightning as L
import pytest
import torch

from rucai.data.synthetic import SyntheticDataModule
from rucai.eval.ranking import topk_metrics
from rucai.models.tiger import TIGER, beam_ranks, beam_search, random_codes
from rucai.models.trie import EOS, SemanticIDTrie


def _tiny(num_items=30, levels=2, K=4, **kw):
    torch.manual_seed(0)
    args = dict(d_model=32, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=2, d_kv=16, max_len=5,
                num_beams=num_items, topk=(5, 10))
    args.update(kw)
    return TIGER(num_items=num_items, item_codes=random_codes(num_items, levels=levels, codebook_size=K), **args).eval()


def _batch(num_items, B=4, T=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    seq = torch.randint(1, num_items + 1, (B, T), generator=g)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    seq[torch.arange(T)[None] >= lengths[:, None]] = 0
    return seq, lengths


def test_trie_random_walks_only_reach_items():
    codes = random_codes(200, levels=3, codebook_size=8, seed=1)
    trie = SemanticIDTrie(codes)
    valid = {tuple(int(trie.token(lv, c)) for lv, c in enumerate(v)) for v in codes.values()}
    rng = random.Random(0)
    for _ in range(300):
        prefix = []
        while True:
            nxt = trie.allowed_next(prefix)
            assert nxt, prefix
            if nxt == [EOS]:
                break
            prefix.append(rng.choice(nxt))
        assert tuple(prefix) in valid and trie.item_of(prefix) > 0
    assert trie.allowed_next([trie.token(1, 0)]) == []  # level-1 token at level 0: not a prefix
    # the vectorised mask/step agree with allowed_next
    nodes = torch.arange(trie.num_nodes)
    mask = trie.allowed_mask(nodes)
    for n in rng.sample(range(trie.level_base[trie.num_levels]), 50):
        codes_n = mask[n].nonzero().view(-1)
        children = trie.step(torch.full_like(codes_n, n), codes_n)
        assert (children > n).all()
        bad = (~mask[n]).nonzero().view(-1)
        assert (trie.step(torch.full_like(bad, n), bad) == -1).all()
    assert not trie.allowed_mask(torch.tensor([-1])).any()


def test_trie_rejects_collisions():
    with pytest.raises(ValueError, match="collision"):
        SemanticIDTrie({1: [0, 1], 2: [0, 1]})


def test_item_token_round_trip():
    m = _tiny()
    for i in range(1, 31):
        assert m.trie.item_of(m.item2tok[i].tolist()) == i
    seq, lengths = _batch(30)
    ids, mask = m.encode_inputs(seq, lengths)
    for b in range(len(seq)):
        n = int(lengths[b]) * m.num_levels
        assert ids[b, n] == EOS and mask[b].sum() == n + 1
        Lv = m.num_levels
        assert [m.trie.item_of(ids[b, j:j + Lv].tolist()) for j in range(0, n, Lv)] == seq[b, :lengths[b]].tolist()


def test_item_codes_from_json(tmp_path):
    codes = random_codes(12, levels=2, codebook_size=3)
    path = tmp_path / "codes.json"
    path.write_text(json.dumps({str(k): v for k, v in codes.items()}))
    m = TIGER(num_items=12, item_codes=str(path), d_model=16, d_ff=32, num_layers=1, num_decoder_layers=1,
              num_heads=2, d_kv=8, topk=(5,), num_beams=5)
    assert m.trie.item_of(m.item2tok[7].tolist()) == 7
    assert "item_codes" not in m.hparams and m.hparams.num_items == 12  # the table stays out of hparams.yaml
    with pytest.raises(ValueError, match="lacks"):
        TIGER(num_items=13, item_codes=str(path))


def test_full_beam_returns_every_item_once_with_exact_scores():
    m = _tiny()
    seq, lengths = _batch(30)
    ids, mask = m.encode_inputs(seq, lengths)
    items, tokens, scores = beam_search(m.t5, m.trie, ids, mask, num_beams=30)
    for b in range(len(seq)):
        assert sorted(items[b].tolist()) == list(range(1, 31))
        assert (scores[b, :-1] >= scores[b, 1:]).all()
        # scores = teacher-forced log-likelihood of each item's code tokens
        t = tokens[b]
        dec = torch.cat([torch.zeros(30, 1, dtype=torch.long), t[:, :-1]], 1)
        out = m.t5(input_ids=ids[b:b + 1].expand(30, -1), attention_mask=mask[b:b + 1].expand(30, -1),
                   decoder_input_ids=dec).logits
        lp = torch.log_softmax(out, -1).gather(2, t.unsqueeze(-1)).squeeze(-1).sum(1)
        assert torch.allclose(lp, scores[b], atol=1e-4)


def test_constrained_beams_valid_sorted_unique_and_unconstrained_may_be_invalid():
    m = _tiny(num_items=60, levels=3, K=8, num_beams=20)
    seq, lengths = _batch(60, B=8)
    items, scores = m.recommend(seq, lengths, num_beams=20)
    assert (items > 0).all()
    for b in range(len(seq)):
        assert len(set(items[b].tolist())) == 20
        assert (scores[b, :-1] >= scores[b, 1:]).all()
    free, free_scores = m.recommend(seq, lengths, num_beams=20, constrained=False)
    assert (free == -1).any()  # 60 of 8^3 code tuples exist: a random model hits invalid ones
    assert (free_scores[:, 0] >= scores[:, 0] - 1e-5).all()  # the unconstrained best is at least as likely
    for b in range(len(seq)):
        valid = [i for i in free[b].tolist() if i > 0]
        assert len(set(valid)) == len(valid)


def test_metrics_from_hand_made_beams():
    items = torch.tensor([[3, -1, 5, 7], [1, 2, 3, 4], [9, 8, 7, 6], [-1, -1, 2, 1]])
    target = torch.tensor([5, 9, 7, 2])
    # miss (the authors' evaluator): an invalid beam (-1) keeps its rank slot; not found = #beams
    ranks = beam_ranks(items, target, "miss")
    assert ranks.tolist() == [2, 4, 2, 2]
    m = topk_metrics(ranks, (1, 2, 3))
    assert m["recall@1"].tolist() == [0, 0, 0, 0]
    assert m["recall@2"].tolist() == [0, 0, 0, 0]
    assert m["recall@3"].tolist() == [1, 0, 1, 1]
    assert torch.allclose(m["ndcg@3"], torch.tensor([1 / math.log2(4), 0, 1 / math.log2(4), 1 / math.log2(4)]))
    # drop: invalid beams removed before ranking (a target behind k invalid beams moves up k places)
    ranks = beam_ranks(items, target, "drop")
    assert ranks.tolist() == [1, 4, 2, 0]
    m = topk_metrics(ranks, (1, 2, 3))
    assert m["recall@1"].tolist() == [0, 0, 0, 1]
    assert m["recall@2"].tolist() == [1, 0, 0, 1]
    assert m["recall@3"].tolist() == [1, 0, 1, 1]
    expect = [1 / math.log2(3), 0, 1 / math.log2(4), 1]
    assert torch.allclose(m["ndcg@3"], torch.tensor(expect))
    # no invalid beam before the target: both modes agree (trie-constrained decoding: dead beams come last)
    items = torch.tensor([[4, 5, -1, -1]])
    assert beam_ranks(items, torch.tensor([5]), "miss").tolist() == beam_ranks(items, torch.tensor([5]), "drop").tolist()


@pytest.mark.parametrize("mode,ndcg", [("miss", 1 / math.log2(3)), ("drop", 1.0)])
def test_evaluation_scores_invalid_beams_by_the_model_option(mode, ndcg, monkeypatch):
    model = _tiny(num_items=10, num_beams=3, topk=(1, 2), invalid_beams=mode)
    logged = {}
    monkeypatch.setattr(model, "recommend", lambda *a, **k: (torch.tensor([[-1, 5, 7]]), torch.zeros(1, 3)))
    monkeypatch.setattr(model, "log", lambda name, v, **k: logged.__setitem__(name, float(v)))
    model._evaluate({"seq": torch.tensor([[1, 2]]), "lengths": torch.tensor([2]), "target": torch.tensor([5])},
                    "val")
    assert logged["val/ndcg@2"] == pytest.approx(ndcg)  # target behind one invalid beam: rank 1 (miss) or 0
    assert logged["val/recall@1"] == (1.0 if mode == "drop" else 0.0)


def test_bad_model_options_are_user_errors():
    from rucai.errors import UserError

    with pytest.raises(UserError, match="invalid_beams"):
        _tiny(num_items=10, invalid_beams="skip")
    with pytest.raises(UserError, match="user_token"):
        _tiny(num_items=10, user_token=True)


def test_user_token_is_prepended_hashed_and_off_by_default():
    seq, lengths = _batch(30)
    user = torch.tensor([0, 9, 16, 7])
    batch = {"seq": seq, "lengths": lengths, "target": torch.ones(4, dtype=torch.long), "user": user}
    plain = _tiny()
    ids0, mask0 = plain.encode_inputs(seq, lengths)
    ids, mask = plain.model_inputs(batch)  # off (default): the "user" key changes nothing
    assert torch.equal(ids, ids0) and torch.equal(mask, mask0)
    assert plain.t5.config.vocab_size == plain.trie.vocab_size
    model = _tiny(user_token=7)
    assert model.t5.config.vocab_size == model.trie.vocab_size + 7  # 7 rows after the code tokens
    ids, mask = model.model_inputs(batch)
    off = model.trie.vocab_size
    assert ids[:, 0].tolist() == [off + 0, off + 2, off + 2, off + 0]  # user % 7 after the code tokens
    assert torch.equal(ids[:, 1:], ids0) and mask[:, 0].tolist() == [1] * 4 and torch.equal(mask[:, 1:], mask0)
    assert torch.equal(model.model_inputs(batch)[0], ids)  # deterministic
    with pytest.raises(ValueError, match="user"):
        model.model_inputs({"seq": seq, "lengths": lengths})
    items, _ = model.recommend(seq, lengths, num_beams=5, user=user)  # decoding reads the user token too
    assert items.shape == (4, 5)
    loss = model.t5(input_ids=ids, attention_mask=mask, labels=model.target_tokens(batch["target"])).loss
    assert torch.isfinite(loss)


def test_batches_carry_the_user_index_and_are_otherwise_unchanged():
    from rucai.data.sequential import HistoryTargetDataset, collate_right_padded, loo_split, loo_users

    seqs = [[1, 2, 3, 4, 5], [2, 3], [6, 7, 8, 9]]
    train, valid, test = loo_split(seqs, 3)
    users = loo_users(seqs)
    assert users == ([0, 0, 2], [0, 2], [0, 2])  # user 1 (< 3 items) dropped, as loo_split drops it
    for pairs, us in zip((train, valid, test), users, strict=True):
        ds = HistoryTargetDataset(pairs, 3, users=us)
        items = [ds[i] for i in range(len(ds))]
        assert all(ds[i] == pairs[i] and len(ds[i]) == 2 for i in range(len(ds)))  # still (history, target)
        with_user = collate_right_padded(items, 3)
        without = collate_right_padded(pairs, 3)
        assert with_user.pop("user").tolist() == us and "user" not in without
        assert all(torch.equal(with_user[k], without[k]) for k in without)


def test_learns_synthetic_transitions():
    torch.manual_seed(0)
    n = 100
    dm = SyntheticDataModule(num_users=250, num_items=n, batch_size=64, eval_batch_size=250, max_len=5, p_follow=0.9)
    dm.setup("fit")
    model = TIGER(item_codes=random_codes(n, levels=3, codebook_size=5, seed=0), d_model=64, d_ff=128,
                  num_layers=2, num_decoder_layers=2, num_heads=2, d_kv=32, dropout=0.0, lr=1e-3,
                  weight_decay=0.0, num_beams=10, topk=(5, 10), **dm.model_kwargs())
    trainer = L.Trainer(max_epochs=10, accelerator="cpu", logger=False, enable_checkpointing=False, limit_val_batches=0,
                        enable_progress_bar=False, enable_model_summary=False, gradient_clip_val=1.0)
    trainer.fit(model, datamodule=dm)
    res = trainer.test(model, datamodule=dm, verbose=False)[0]
    assert set(res) >= {"test/recall@5", "test/recall@10", "test/ndcg@5", "test/ndcg@10"}
    assert res["test/recall@10"] > 0.2, res  # random: 10 / 100


def test_tiger_office_smoke_gets_rqvae_codes_through_item_tokenizer(tmp_path, monkeypatch):
    """`experiment=tiger/office debug=smoke`: build() instantiates item_tokenizer=rqvae on the data's
    items and hands the codes to TIGER (the data layer knows nothing of tokenizers); one smoke fit."""
    from rucai import tasks
    from rucai.rec import embeddings
    from rucai.rec.semantic_ids import RQVAETokenizer
    from tests.conftest import compose_config
    from tests.test_rqvae import FakeEncoder

    n = 24
    d = tmp_path / "data" / "amazon18_office"
    d.mkdir(parents=True)
    inter = {str(u): [(u * 3 + k) % n for k in range(6)] for u in range(40)}  # LC-Rec ids are 0-based
    (d / "Office_Products.inter.json").write_text(json.dumps(inter))
    (d / "Office_Products.item.json").write_text(json.dumps({str(i): {"title": f"item {i}"} for i in range(n)}))
    monkeypatch.setattr(embeddings, "load_encoder", lambda name, device=None: FakeEncoder())
    rq = dict(layers=[32], e_dim=8, num_codes=[4, 4], batch_size=64, kmeans_iters=20, epochs=3)
    cfg = compose_config(
        "experiment=tiger/office", "debug=smoke", "hardware=cpu", "logger=none",
        f"paths.data_dir={tmp_path / 'data'}", f"paths.output_dir={tmp_path / 'run'}",
        f"item_tokenizer.cache_dir={tmp_path / 'cache'}", "item_tokenizer.encoder=fake",
        *(f"++item_tokenizer.rqvae.{k}={v}" for k, v in rq.items()), "model.d_model=16", "model.d_kv=8",
        "model.d_ff=32", "model.num_layers=1", "model.num_decoder_layers=1", "model.num_heads=2",
        "data.batch_size=16", "data.eval_batch_size=16")
    assert cfg.item_tokenizer._target_ == "rucai.rec.semantic_ids.RQVAETokenizer"
    assert "item_codes" not in cfg.data  # tokenization is not the data layer's business
    dm, model, trainer = tasks.build(cfg)
    assert isinstance(model, TIGER)
    codes = RQVAETokenizer(encoder="fake", fields=list(cfg.item_tokenizer.fields), rqvae=rq,
                           cache_dir=str(tmp_path / "cache"))(dm.data)
    assert model.num_levels == 3 and model.trie.codes.tolist() == [codes[i] for i in range(1, n + 1)]
    trainer.fit(model, datamodule=dm)
    res = trainer.test(model, datamodule=dm, verbose=False)[0]
    assert 0.0 <= res["test/ndcg@10"] <= res["test/recall@10"] <= 1.0


def test_data_layer_imports_nothing_from_rec():
    from tests.test_imports import imports

    bad = [f"{e.path}:{e.line} {e.src} -> {e.dst}" for e in imports()
           if e.src.startswith("rucai.data") and (e.dst == "rucai.rec" or e.dst.startswith("rucai.rec."))]
    assert not bad, bad


def test_shared_leaf_vocabulary_token_layout_trie_and_beams():
    """UTGRec's layout: level 1 has its own range, levels 2 and 3 share one leaf range."""
    g = torch.Generator().manual_seed(0)
    codes, seen = {}, set()
    while len(codes) < 40:  # root codes < 4, leaf codes < 8, unique tuples
        c = (int(torch.randint(0, 4, (1,), generator=g)), *torch.randint(0, 8, (2,), generator=g).tolist())
        if c not in seen:
            seen.add(c)
            codes[len(codes) + 1] = list(c)
    trie = SemanticIDTrie(codes, codebook_size=8, level_offsets=[0, 4, 4])
    assert trie.vocab_size == 2 + 4 + 8
    assert trie.token(1, 5) == trie.token(2, 5) == 2 + 4 + 5  # one token, the same leaf code at either level
    assert trie.token(0, 3) == 5 and trie.token(1, 0) == 6
    for item, c in codes.items():
        toks = [trie.token(lv, x) for lv, x in enumerate(c)]
        assert trie.item_of(toks) == item
        assert toks[2] in trie.allowed_next(toks[:2]) and toks[1] in trie.allowed_next(toks[:1])
    assert all(t < 6 for t in trie.allowed_next([]))  # level 1: root tokens only
    with pytest.raises(ValueError, match="level_offsets"):
        SemanticIDTrie(codes, codebook_size=8, level_offsets=[0, 4])
    torch.manual_seed(0)
    m = TIGER(num_items=40, item_codes=codes, codebook_size=8, level_offsets=[0, 4, 4], d_model=32, d_ff=64,
              num_layers=1, num_decoder_layers=1, num_heads=2, d_kv=16, max_len=5, num_beams=40, topk=(5,)).eval()
    assert m.t5.config.vocab_size >= trie.vocab_size
    seq, lengths = _batch(40)
    items, _ = m.recommend(seq, lengths, num_beams=40)
    for b in range(len(seq)):
        assert sorted(items[b].tolist()) == list(range(1, 41))  # the full beam reaches every item once


def test_random_codes_are_unique_seeded_and_within_sizes():
    from types import SimpleNamespace

    from rucai.errors import UserError
    from rucai.rec.tokenization import RandomCodes

    data = SimpleNamespace(num_items=60)
    a, b = RandomCodes([4, 4, 4], seed=1)(data), RandomCodes([4, 4, 4], seed=1)(data)
    assert a == b and sorted(a) == list(range(1, 61))
    assert len({tuple(v) for v in a.values()}) == 60  # unique: 60 of 64 tuples
    assert all(0 <= c < 4 for v in a.values() for c in v)
    assert RandomCodes([4, 4, 4], seed=2)(data) != a
    with pytest.raises(UserError, match="unique codes"):
        RandomCodes([3, 3, 3])(data)  # 27 tuples < 60 items
