import pytest
import torch

from rucai.data.amazon import LCRecDataModule, load_lcrec
from rucai.data.sequential import collate_right_padded, loo_split
from rucai.data.synthetic import SyntheticDataModule, generate_sequences
from rucai.errors import UserError
from tests.conftest import DATA_DIR, needs_data


def test_loo_split_protocol():
    seqs = [[1, 2, 3, 4, 5], [7, 8], [9, 10, 11]]
    train, valid, test = loo_split(seqs, max_len=2)
    # user 0: train targets 2,3 (from prefixes), valid 4 given [2,3], test 5 given [3,4]
    assert ([1], 2) in train and ([1, 2], 3) in train
    assert valid[0] == ([2, 3], 4) and test[0] == ([3, 4], 5)
    # the 2-item user is dropped; the 3-item user has no training pair but valid/test
    assert len(valid) == 2 and valid[1] == ([9], 10) and test[1] == ([9, 10], 11)
    # no leakage: training never sees the valid/test targets as targets
    assert train == [([1], 2), ([1, 2], 3)]


def test_collate_right_pads():
    b = collate_right_padded([([5, 6, 7], 8), ([3], 4)], max_len=4)
    assert b["seq"].tolist() == [[5, 6, 7, 0], [3, 0, 0, 0]]
    assert b["lengths"].tolist() == [3, 1] and b["target"].tolist() == [8, 4]


def test_synthetic_is_deterministic_and_structured():
    a = generate_sequences(num_users=50, num_items=40, seed=3)
    b = generate_sequences(num_users=50, num_items=40, seed=3)
    c = generate_sequences(num_users=50, num_items=40, seed=4)
    assert a.sequences == b.sequences and a.sequences != c.sequences
    # learnable structure: consecutive pairs repeat far more often than under uniform sampling
    pairs = [(s[i], s[i + 1]) for s in a.sequences for i in range(len(s) - 1)]
    assert len(set(pairs)) < 0.6 * len(pairs)


def test_datamodule_batches():
    dm = SyntheticDataModule(num_users=30, num_items=20, batch_size=8, max_len=5)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["seq"].shape == (8, 5) and batch["seq"].dtype == torch.long
    assert dm.model_kwargs() == {"num_items": 20, "max_len": 5}
    assert dm.stats["users"] == 30


def test_missing_dir_is_one_line_user_error(tmp_path):
    with pytest.raises(UserError) as e:
        load_lcrec(tmp_path / "nope", "Office_Products")
    assert "\n" not in str(e.value) and "data.dir" in str(e.value)
    (tmp_path / "Toys.inter.json").write_text("{}")
    with pytest.raises(UserError, match="data.name=Toys"):
        load_lcrec(tmp_path, "Office_Products")


@needs_data("amazon18_office")
def test_real_amazon_office():
    data = load_lcrec(DATA_DIR / "amazon18_office", "Office_Products")
    st = data.stats()
    assert (st["users"], st["items"], st["interactions"]) == (4905, 2420, 53258)
    assert min(len(s) for s in data.sequences) >= 5  # 5-core
    assert data.item_text[1]["title"]  # item 0 in the file is id 1 here
    dm = LCRecDataModule(dir=str(DATA_DIR / "amazon18_office"), name="Office_Products")
    dm.setup("fit")
    assert dm.stats["valid"] == dm.stats["test"] == 4905
    assert dm.stats["train"] == 53258 - 3 * 4905


def test_recbole_atomic_loader(tmp_path):
    from rucai.data.recbole import load_atomic

    d = tmp_path / "toy"
    d.mkdir()
    (d / "toy.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                                 "u1\ta\t5\t3\nu1\tb\t1\t1\nu2\tb\t4\t2\nu1\tc\t4\t2\n")
    (d / "toy.item").write_text("item_id:token\ttitle:token_seq\na\tAlpha\nb\tBeta\n")
    data = load_atomic(d, "toy")
    assert data.num_items == 3
    # u1 sorted by time: b(1), c(2), a(3); ids by first appearance: a=1, b=2, c=3
    assert data.sequences[data.user_ids.index("u1")] == [2, 3, 1]
    assert data.item_text[1] == {"title": "Alpha"}
    assert load_atomic(d, "toy", min_rating=4).sequences[data.user_ids.index("u1")] == [3, 1]
    with pytest.raises(UserError, match="toy2.inter not found"):
        load_atomic(d, "toy2")


@needs_data("ml-100k")
def test_real_ml100k():
    from rucai.data.recbole import load_atomic

    data = load_atomic(DATA_DIR / "ml-100k", "ml-100k")
    st = data.stats()
    assert (st["users"], st["items"], st["interactions"]) == (943, 1682, 100000)
    assert data.item_text[data.sequences[0][0]]["movie_title"]


def _pairs_from_windows(windows):
    pairs = set()
    for x, y in windows:
        for p, tgt in enumerate(y):
            if tgt:
                pairs.add((tuple(x[: p + 1]), tgt))
    return pairs


@pytest.mark.parametrize("max_len", [1, 3, 5, 20])
def test_train_windows_hold_exactly_the_loo_training_pairs(max_len):
    from rucai.data.sequential import train_windows

    rng = torch.Generator().manual_seed(0)
    seqs = [torch.randint(1, 50, (int(n),), generator=rng).tolist()
            for n in torch.randint(1, 30, (200,), generator=rng)]
    train, _, _ = loo_split(seqs, max_len)
    windows = train_windows(seqs, max_len)
    n_targets = sum(sum(1 for t in y if t) for _, y in windows)
    assert n_targets == len(train)  # each training pair exactly once
    assert _pairs_from_windows(windows) == {(tuple(h), t) for h, t in train}
    assert all(len(x) == len(y) <= max_len for x, y in windows)


def test_all_positions_loss_equals_prefix_loss():
    """Same model, same pairs: the all-positions CE equals the mean CE over loo prefixes (no dropout)."""
    from rucai.data.sequential import collate_windows, train_windows
    from rucai.models.sasrec import SASRec

    torch.manual_seed(0)
    seqs = [torch.randint(1, 30, (n,)).tolist() for n in (4, 7, 12, 25, 9)]
    model = SASRec(num_items=30, max_len=6, hidden_size=16, dropout=0.0, attn_dropout=0.0).eval()
    train, _, _ = loo_split(seqs, 6)
    prefix = model.training_step(collate_right_padded(train, 6), 0)
    windows = model.training_step(collate_windows(train_windows(seqs, 6)), 0)
    assert torch.allclose(prefix, windows, atol=1e-5)


def test_bad_train_mode_is_user_error():
    with pytest.raises(UserError, match="train_mode"):
        SyntheticDataModule(train_mode="windows")


def _write_amazon23(d, category="Musical_Instruments"):
    """Three users in the 2023 benchmark layout (histories as the files hold them)."""
    import gzip
    import json

    seqs = {"U1": ["A", "B", "C", "D", "E"], "U2": ["C", "A", "F", "B", "G", "A"], "U3": ["F", "G", "H", "B", "C"]}
    d.mkdir(parents=True, exist_ok=True)
    rows = {"train": [], "valid": [], "test": []}
    for u, s in seqs.items():
        for t in range(len(s) - 2):
            rows["train"].append((u, s[t], " ".join(s[:t])))
        rows["valid"].append((u, s[-2], " ".join(s[:-2])))
        rows["test"].append((u, s[-1], " ".join(s[:-1])))
    for split, rs in rows.items():
        with gzip.open(d / f"{category}.{split}.csv.gz", "wt") as f:
            f.write("user_id,parent_asin,rating,timestamp,history\n")
            for i, (u, a, h) in enumerate(rs):
                f.write(f"{u},{a},5.0,{1000 + i},{h}\n")
    with gzip.open(d / f"meta_{category}.jsonl.gz", "wt") as f:
        for a in "ABCDEFGHZ":
            f.write(json.dumps({"parent_asin": a, "title": f"item {a}", "features": ["x", "y"], "store": "S",
                                "description": [], "categories": ["Music", "Guitars"]}) + "\n")
    return seqs


def test_amazon2023_loader_reproduces_the_files_split(tmp_path):
    from rucai.data.amazon2023 import Amazon2023DataModule, load_amazon2023

    seqs = _write_amazon23(tmp_path / "a23")
    data = load_amazon2023(tmp_path / "a23", "instruments")
    assert data.name == "Musical_Instruments" and data.num_items == 8  # Z has metadata but no interaction
    inv = {}
    for u, s in zip(data.user_ids, data.sequences, strict=True):
        assert len(s) == len(seqs[u])
        for i, a in zip(s, seqs[u], strict=True):
            assert inv.setdefault(i, a) == a  # one asin per id
    assert data.item_text[data.sequences[0][0]]["title"] == "item A"
    assert data.item_text[data.sequences[0][0]]["brand"] == "S" and "description" not in data.item_text[1]
    dm = Amazon2023DataModule(dir=str(tmp_path / "a23"), category="Musical_Instruments", max_len=3)
    dm.setup()
    test = {inv[t]: [inv[i] for i in h] for h, t in dm._splits["test"].pairs}
    assert test["E"] == ["B", "C", "D"]  # U1: last item given the last 3 before it
    assert len(dm._splits["train"]) == sum(len(s) - 3 for s in seqs.values())


def test_amazon2023_missing_files_name_the_download_command(tmp_path):
    from rucai.data.amazon2023 import load_amazon2023

    _write_amazon23(tmp_path / "a23")
    with pytest.raises(UserError, match="found categories: Musical_Instruments"):
        load_amazon2023(tmp_path / "a23", "Video_Games")
    with pytest.raises(UserError, match="rucai.data.download amazon23 --category Video_Games"):
        load_amazon2023(tmp_path / "nowhere", "games")
