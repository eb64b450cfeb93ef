"""UTGRec's Lightning glue: the warm-up counter through a real checkpoint, the HF-style schedule by
hand, and the pipeline's stages on tiny data (codes unique, stages reused)."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch

from rucai.utgrec.module import UTGTokenizerModule

V, D, B, T, S = 40, 16, 4, 6, 5


def _batch(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, V, (B, S), generator=g)
    labels = torch.where(torch.rand(B, S, generator=g) < 0.5, ids, torch.full_like(ids, -100))
    batch = {"item": torch.arange(1, B + 1), "states": torch.randn(B, T, D, generator=g),
             "state_mask": torch.ones(B, T, dtype=torch.bool), "text_input": ids, "text_labels": labels,
             "text_mask": torch.ones(B, S, dtype=torch.bool)}
    for k in ("states", "state_mask", "text_input", "text_labels", "text_mask"):
        batch[f"pos_{k}"] = batch[k].clone()
    return batch


class _Batches(torch.utils.data.Dataset):
    def __len__(self):
        return 5

    def __getitem__(self, i):
        return _batch(i)


def _module(**kw) -> UTGTokenizerModule:
    torch.manual_seed(0)
    args = dict(head_layers=1, head_heads=2, code_dim=8, root_codes=4, leaf_codes=8, decoder_heads=2,
                vq_warmup_steps=3, lr=1e-3)
    return UTGTokenizerModule(torch.randn(V, D), state_dim=D, **(args | kw))


def test_warmup_counter_survives_a_lightning_checkpoint(tmp_path):
    m = _module()
    loader = torch.utils.data.DataLoader(_Batches(), batch_size=None)
    tr = L.Trainer(max_steps=4, logger=False, enable_progress_bar=False, enable_model_summary=False,
                   default_root_dir=str(tmp_path))
    tr.fit(m, loader)
    assert int(m.tok.quantizer.step) == 4 and not m.tok.quantizer.in_warmup()  # 0..3 bypass (<= 3), step 4 quantises
    tr.save_checkpoint(tmp_path / "c.ckpt")
    fresh = _module()
    assert fresh.tok.quantizer.in_warmup()
    fresh.load_state_dict(torch.load(tmp_path / "c.ckpt", weights_only=False)["state_dict"])
    assert int(fresh.tok.quantizer.step) == 4 and not fresh.tok.quantizer.in_warmup()


def test_schedule_is_linear_warmup_then_linear_decay():
    m = _module(lr=1.0, warmup_ratio=0.2)

    class _T:
        estimated_stepping_batches = 10

    m._trainer = _T()  # what configure_optimizers reads
    conf = m.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    seen = []
    for _ in range(10):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    # warm = 2 steps: 0, 1/2, then (10 - s) / 8 for s = 2..9
    assert seen == pytest.approx([0.0, 0.5, 1.0, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8])
    assert opt.param_groups[0]["weight_decay"] == 0.01


def test_pipeline_codes_are_unique_and_stages_are_reused(tmp_path, smoke_data_dir):
    from tests.conftest import run_cli

    common = ["experiment=utgrec/office_cpu", "debug=smoke", f"paths.data_dir={smoke_data_dir}"]
    run = tmp_path / "run"
    r = run_cli(*common, "task=utgrec.codes", run_dir=run, env={"RUCAI_DATA_DIR": str(smoke_data_dir)})
    assert r.returncode == 0, r.stderr[-3000:]
    codes = json.loads((run / "codes" / "codes.json").read_text())
    assert len({tuple(v) for v in codes.values()}) == len(codes)  # collisions resolved
    assert all(v[0] < 16 and max(v[1:]) < 32 for v in codes.values())  # root 16, shared leaf 32 (smoke sizes)
    pre = json.loads((run / "pretrain" / "done.json").read_text())["result"]
    ad = json.loads((run / "adapt" / "done.json").read_text())["result"]
    assert ad["init"] == pre["tokenizer"]  # adaptation starts from the pre-trained tokenizer
    before = (run / "adapt" / "tokenizer.pt").stat().st_mtime
    r = run_cli(*common, run_dir=run, env={"RUCAI_DATA_DIR": str(smoke_data_dir)})  # the whole pipeline
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.metrics()["recommender_pretrained"] is True and r.metrics()["status"] == "completed"
    rp = json.loads((run / "rec_pretrain" / "done.json").read_text())["result"]
    src = json.loads((run / "rec_pretrain" / "codes.json").read_text())
    assert rp["source_items"] == len(src) and len({tuple(v) for v in src.values()}) == len(src)
    r = run_cli(*common, "task=utgrec.codes", run_dir=run, env={"RUCAI_DATA_DIR": str(smoke_data_dir)})
    assert r.returncode == 0 and (run / "adapt" / "tokenizer.pt").stat().st_mtime == before  # reused


def test_merge_domains_offsets_items_by_hand():
    from rucai.data.sequential import SequenceData
    from rucai.utgrec.tasks import merge_domains

    a = SequenceData(name="a", sequences=[[1, 2], [2, 3]], num_items=3, item_text={1: {"title": "x"}})
    b = SequenceData(name="b", sequences=[[2, 1]], num_items=2, item_text={2: {"title": "y"}})
    m = merge_domains([a, b])
    assert m.num_items == 5 and m.sequences == [[1, 2], [2, 3], [5, 4]]
    assert m.item_text == {1: {"title": "x"}, 5: {"title": "y"}} and m.name == "a+b"
