"""EASY-EP: scores vs an independent hand computation, adapters, selection, streamed pruning."""

from __future__ import annotations

import json

import pytest
import torch

from rucai.easyep.adapters import for_model
from rucai.easyep.prune import apply_expert_mask, prune_checkpoint
from rucai.easyep.scoring import score_texts, select_demos
from rucai.easyep.selection import (
    keep_from_method,
    load_keep,
    mix_domains,
    normalise_rows,
    random_keep,
    save_keep,
    topk_keep,
)
from rucai.easyep.toy import ByteTokenizer, tiny_model
from rucai.runtime import load_causal_lm
from tests.conftest import needs_data

needs_data_all = needs_data("math", "math_test.jsonl")

FAMILIES = ["deepseek_v3", "qwen2_moe", "qwen3_moe", "mixtral", "olmoe"]
TEXTS = ["The integral of x^2 from 0 to 1 is 1/3.", "Question: who wrote Hamlet?\nAnswer: Shakespeare",
         "Product: stapler, black, 20 sheets", "ok"]


def _tiny(family: str, **kw):
    extra = {"n_group": 2, "topk_group": 1} if family == "deepseek_v3" else {}
    return tiny_model(family, seed=1, hidden=32, layers=2, experts=8, top_k=2, moe_inter=16, **(extra | kw))


# ------------------------------------------------------------------------------------------------
# independent reference: routing and experts written out by hand from the raw weights


def _hand_route(family: str, cfg, gate_w, bias, h):
    logits = h.double() @ gate_w.double().T
    k = cfg.num_experts_per_tok
    if family == "deepseek_v3":
        s = torch.sigmoid(logits)
        choice = s + bias.double()
        E, G = s.shape[1], cfg.n_group
        out_w, out_i = [], []
        for t in range(s.shape[0]):
            groups = choice[t].view(G, E // G)
            gscore = groups.topk(2, dim=-1).values.sum(-1)
            allowed = set()
            for g in gscore.topk(cfg.topk_group).indices.tolist():
                allowed |= set(range(g * (E // G), (g + 1) * (E // G)))
            cand = sorted(allowed, key=lambda e: -float(choice[t, e]))[:k]
            w = s[t, cand]
            w = w / w.sum() * cfg.routed_scaling_factor
            out_w.append(w)
            out_i.append(torch.tensor(cand))
        return torch.stack(out_w), torch.stack(out_i)
    p = torch.softmax(logits, dim=-1)
    w, i = p.topk(k, dim=-1)
    if family == "mixtral" or cfg.norm_topk_prob:
        w = w / w.sum(-1, keepdim=True)
    return w, i


def _hand_expert(experts, e, h):
    gu = h.double() @ experts.gate_up_proj[e].double().T
    g, u = gu.chunk(2, dim=-1)
    return (torch.nn.functional.silu(g) * u) @ experts.down_proj[e].double().T


@pytest.mark.parametrize("family", FAMILIES)
def test_scores_match_hand_computation(family):
    model = _tiny(family)
    tok = ByteTokenizer()
    adapter = for_model(model)
    blocks = adapter.moe_blocks(model)
    enc = tok(TEXTS)
    valid = enc["attention_mask"].reshape(-1).bool()
    captured = {}
    handles = [adapter.layers(model)[li].post_attention_layernorm.register_forward_hook(
        lambda mod, a, o, li=li: captured.__setitem__(li, (a[0].detach(), o.detach()))) for li in blocks]
    with torch.no_grad():
        model(**enc, use_cache=False)
    for h in handles:
        h.remove()
    E = adapter.num_experts(model.config)
    want = {}
    for li, block in blocks.items():
        x, hn = (t.reshape(-1, t.shape[-1]) for t in captured[li])
        bias = getattr(block.gate, "e_score_correction_bias", torch.zeros(E))
        w, idx = _hand_route(family, model.config, block.gate.weight, bias, hn)
        outs = torch.stack([torch.stack([_hand_expert(block.experts, int(idx[t, j]), hn[t:t + 1])[0]
                                         for j in range(idx.shape[1])]) for t in range(idx.shape[0])])
        y = (w.unsqueeze(-1) * outs).sum(1)
        s = (1 - torch.nn.functional.cosine_similarity(x.double(), x.double() + y, dim=-1)).clamp_min(0)
        imp, F, G = torch.zeros(E, dtype=torch.float64), torch.zeros(E, dtype=torch.float64), torch.zeros(E, dtype=torch.float64)
        for t in torch.nonzero(valid).squeeze(-1).tolist():
            for j in range(idx.shape[1]):
                e = int(idx[t, j])
                imp[e] += w[t, j] * outs[t, j].norm() * s[t]
                F[e] += 1
                G[e] += w[t, j]
        want[li] = (imp, F, G)
    got = score_texts(model, tok, TEXTS, batch_size=len(TEXTS))
    assert got.layers == sorted(blocks)
    assert got.num_tokens == int(valid.sum())
    for row, li in enumerate(got.layers):
        imp, F, G = want[li]
        assert imp.sum() > 0
        torch.testing.assert_close(got.easyep[row], imp, rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(got.frequency[row], F)
        torch.testing.assert_close(got.gate[row], G, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("family", FAMILIES)
def test_adapter_route_reproduces_router(family):
    model = _tiny(family)
    adapter = for_model(model)
    h = torch.randn(40, model.config.hidden_size)
    for block in adapter.moe_blocks(model).values():
        _, w0, i0 = block.gate(h)
        _, w1, i1 = adapter.route(block.gate, h)
        o0, o1 = i0.sort(-1), i1.sort(-1)
        assert torch.equal(o0.values, o1.values)
        torch.testing.assert_close(w0.gather(1, o0.indices), w1.gather(1, o1.indices))


def test_scores_ignore_padding_and_batching():
    model = _tiny("qwen3_moe")
    tok = ByteTokenizer()
    one = score_texts(model, tok, TEXTS, batch_size=1)
    many = score_texts(model, tok, TEXTS, batch_size=4)
    assert one.num_tokens == many.num_tokens == sum(len(t.encode()) + 1 for t in TEXTS)
    torch.testing.assert_close(one.easyep, many.easyep, rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# selection


def test_topk_mix_and_masks(tmp_path):
    s = torch.tensor([[3.0, 1.0, 3.0, 0.5], [0.0, 2.0, 1.0, 4.0]])
    assert topk_keep(s, [3, 4], 2) == {3: [0, 2], 4: [1, 3]}
    # mixed domains: rows normalised to 1, then summed (hand-computed)
    a = torch.tensor([[1.0, 1.0, 2.0, 0.0]])
    b = torch.tensor([[0.0, 10.0, 0.0, 10.0]])
    torch.testing.assert_close(normalise_rows(a), torch.tensor([[0.25, 0.25, 0.5, 0.0]], dtype=torch.float64))
    mixed = mix_domains([a, b])
    torch.testing.assert_close(mixed, torch.tensor([[0.25, 0.75, 0.5, 0.5]], dtype=torch.float64))
    assert topk_keep(mixed, [0], 2) == {0: [1, 2]}  # raw sums would pick 1 and 3
    p = save_keep(tmp_path / "mask.json", {3: [0, 2], 4: [1, 3]}, 4)
    d = json.loads(p.read_text())
    assert d["mask"] == [[1, 0, 1, 0], [0, 1, 0, 1]]
    assert load_keep(p) == {3: [0, 2], 4: [1, 3]}
    # the authors' bare mask: rows of 0/1 for MoE layers from first_layer on
    assert load_keep([[0, 1, 1, 0], [1, 0, 0, 1]], first_layer=3) == {3: [1, 2], 4: [0, 3]}
    r = random_keep([1, 2], 8, 4, seed=0)
    assert r == random_keep([1, 2], 8, 4, seed=0) and all(len(v) == 4 for v in r.values())


def test_select_demos_longest_of_shuffle():
    texts = [f"{'x' * n}" for n in (5, 50, 10, 40, 20)]
    assert select_demos(texts, n=2, rule="longest") == ["x" * 50, "x" * 40]
    assert select_demos(texts, n=2, rule="first") == texts[:2]
    assert sorted(select_demos(texts, n=None, rule="random")) == sorted(texts)


# ------------------------------------------------------------------------------------------------
# streamed pruning


def _ids():
    return torch.randint(0, 256, (2, 10), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("family", ["deepseek_v3", "qwen3_moe"])
def test_prune_all_experts_gives_identical_logits(family, tmp_path):
    model = _tiny(family)
    model.save_pretrained(tmp_path / "src", max_shard_size="40KB")
    assert len(list((tmp_path / "src").glob("*.safetensors"))) > 4
    (tmp_path / "src" / "tokenizer.json").write_text("{}")
    layers = sorted(for_model(model).moe_blocks(model))
    s = prune_checkpoint(tmp_path / "src", tmp_path / "dst", {li: list(range(8)) for li in layers})
    assert s["num_experts_after"] == 8 and "tokenizer.json" in s["copied"]
    re = load_causal_lm(tmp_path / "dst", None, dtype="float32").eval()
    with torch.no_grad():
        assert torch.equal(re(_ids()).logits, model(_ids()).logits)


@pytest.mark.parametrize("family", ["deepseek_v3", "qwen3_moe"])
def test_half_pruned_checkpoint_loads_generates_and_matches_mask_mode(family, tmp_path):
    model = _tiny(family)
    model.save_pretrained(tmp_path / "src", max_shard_size="40KB")
    adapter = for_model(model)
    layers = sorted(adapter.moe_blocks(model))
    scores = score_texts(model, ByteTokenizer(), TEXTS)
    keep = keep_from_method("easyep", scores, 4)
    if family == "deepseek_v3":  # 2 groups of 4: keep 2 per group so group-limited routing survives
        keep = {li: [0, 2, 5, 7] for li in layers}
    s = prune_checkpoint(tmp_path / "src", tmp_path / "dst", keep)
    cfg = json.loads((tmp_path / "dst" / "config.json").read_text())
    assert adapter.num_experts(cfg) == 4
    index = json.loads((tmp_path / "dst" / "model.safetensors.index.json").read_text())["weight_map"]
    assert not any(".experts.4." in k or ".experts.7." in k for k in index)
    assert all((tmp_path / "dst" / f).is_file() for f in set(index.values()))
    assert s["shards_out"] == len(set(index.values()))
    pruned = load_causal_lm(tmp_path / "dst", None, dtype="float32").eval()
    for block in adapter.moe_blocks(pruned).values():
        assert block.experts.gate_up_proj.shape[0] == 4 and block.gate.weight.shape[0] == 4
    ids = _ids()
    with torch.no_grad():
        got = pruned(ids).logits
        full = model(ids).logits
        handle = apply_expert_mask(model, keep)
        masked = model(ids).logits
        handle.remove()
        again = model(ids).logits
    torch.testing.assert_close(got, masked, rtol=1e-4, atol=1e-5)  # renormalising families: same routing
    assert not torch.allclose(got, full, atol=1e-4)
    assert torch.equal(again, full)  # mask removed
    gen = pruned.generate(ids[:1, :4], max_new_tokens=6, do_sample=False, pad_token_id=257)
    assert gen.shape == (1, 10)


def test_deepseek_uneven_groups_fall_back_to_one_group(tmp_path):
    model = _tiny("deepseek_v3")
    model.save_pretrained(tmp_path / "src")
    layers = sorted(for_model(model).moe_blocks(model))
    s = prune_checkpoint(tmp_path / "src", tmp_path / "dst", {li: [0, 1, 2, 5] for li in layers})
    cfg = json.loads((tmp_path / "dst" / "config.json").read_text())
    assert cfg["n_routed_experts"] == 4 and cfg["n_group"] == 1 and cfg["topk_group"] == 1
    assert any("n_group 2 -> 1" in n for n in s["config_notes"])


def test_prune_fused_layout_and_router_slices(tmp_path):
    """A checkpoint holding fused [E, ...] expert tensors is sliced on dim 0 (router + bias too)."""
    from safetensors.torch import load_file, save_file
    model = _tiny("deepseek_v3")
    src = tmp_path / "src"
    model.config.save_pretrained(src)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    names = sorted(sd)
    save_file({k: sd[k] for k in names[: len(names) // 2]}, str(src / "a.safetensors"))
    save_file({k: sd[k] for k in names[len(names) // 2:]}, str(src / "b.safetensors"))
    (src / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {k: ("a" if i < len(names) // 2 else "b") + ".safetensors" for i, k in enumerate(names)}}))
    keep = {1: [1, 3, 4, 6], 2: [0, 3, 5, 6]}
    prune_checkpoint(src, tmp_path / "dst", keep)
    out = {}
    for f in (tmp_path / "dst").glob("*.safetensors"):
        out |= load_file(str(f))
    for li, ids in keep.items():
        p = f"model.layers.{li}.mlp."
        assert torch.equal(out[p + "experts.gate_up_proj"], sd[p + "experts.gate_up_proj"][ids])
        assert torch.equal(out[p + "experts.down_proj"], sd[p + "experts.down_proj"][ids])
        assert torch.equal(out[p + "gate.weight"], sd[p + "gate.weight"][ids])
        assert torch.equal(out[p + "gate.e_score_correction_bias"], sd[p + "gate.e_score_correction_bias"][ids])
        assert torch.equal(out[p + "shared_experts.down_proj.weight"], sd[p + "shared_experts.down_proj.weight"])
    pruned = load_causal_lm(tmp_path / "dst", None, dtype="float32").eval()
    with torch.no_grad():
        h = apply_expert_mask(model, keep)
        torch.testing.assert_close(pruned(_ids()).logits, model(_ids()).logits, rtol=1e-4, atol=1e-5)
        h.remove()


def test_prune_errors_are_one_line(tmp_path):
    from rucai.errors import UserError

    model = _tiny("qwen3_moe")
    model.save_pretrained(tmp_path / "src")
    with pytest.raises(UserError, match="lacks MoE layer 1"):
        prune_checkpoint(tmp_path / "src", tmp_path / "d1", {0: [0, 1, 2, 3]})
    with pytest.raises(UserError, match="same number"):
        prune_checkpoint(tmp_path / "src", tmp_path / "d2", {0: [0, 1, 2, 3], 1: [0, 1, 2]})
    with pytest.raises(UserError, match="out of range"):
        prune_checkpoint(tmp_path / "src", tmp_path / "d3", {0: [0, 1, 2, 9], 1: [0, 1, 2, 3]})
    with pytest.raises(UserError, match="routes to 2"):
        prune_checkpoint(tmp_path / "src", tmp_path / "d4", {0: [0], 1: [1]})


@pytest.mark.bench
def test_prune_rss_stays_near_one_shard(tmp_path):
    """Peak RSS of the streamed pruner (fresh process) does not grow with the checkpoint."""
    from rucai.easyep.bench import rss_benchmark

    size = {"hidden": 512, "moe_inter": 256, "experts": 16, "vocab": 1024}
    rows = rss_benchmark(tmp_path, [{"name": "s", "layers": 1} | size, {"name": "l", "layers": 8} | size], shard_mb=8)
    small, large = rows
    assert large["ckpt_mb"] > 4 * small["ckpt_mb"] and large["shards"] > 10
    for r in rows:
        assert r["peak_rss_mb"] - r["baseline_rss_mb"] < 4 * r["largest_shard_mb"] + 32, r
    assert large["peak_rss_mb"] - small["peak_rss_mb"] < 2 * large["largest_shard_mb"], rows


# ------------------------------------------------------------------------------------------------
# the real test of the method: experts trained on distinguishable domains


def _specialise(tmp_path, **kw):
    from rucai.easyep.toy import specialisation_run
    from tests.conftest import DATA_DIR

    torch.set_num_threads(2)
    return specialisation_run(DATA_DIR, tmp_path, **kw)


@pytest.mark.slow  # ~40 s on a quiet 2-core box, ~2.5 min when the box is shared
@needs_data_all
def test_specialisation_easyep_beats_random_small(tmp_path):
    """Small size: a 1-layer MoE trained 80 steps (fewer leaves it so undertrained that pruning can
    even *lower* the loss); pruning to half with math demos must keep math loss and next-token
    agreement closer to the full model's than random pruning does (mean of 3 random draws)."""
    s = _specialise(tmp_path, hidden=32, layers=1, experts=8, top_k=2, moe_inter=32, steps=80, batch_size=8,
                    seq_len=64, n_demos=8, n_eval=24, random_seeds=3, per_domain=300, demo_max_length=256,
                    bench_batch=2, lr=1e-2)
    r = s["results"]
    assert r["full"]["math"]["loss"] < r["easyep"]["math"]["loss"] < r["random_mean"]["math"]["loss"], r
    assert r["easyep"]["math"]["agreement"] > r["random_mean"]["math"]["agreement"], r
    assert s["bench"]["expert_bytes_ratio"] == 0.5


@pytest.mark.slow
@needs_data_all
def test_specialisation_easyep_beats_random_and_baselines_medium(tmp_path):
    s = _specialise(tmp_path, family="deepseek_v3", hidden=64, layers=2, experts=16, top_k=2, moe_inter=64,
                    steps=150, n_eval=48, random_seeds=3)
    r = s["results"]
    assert r["easyep"]["math"]["loss"] < r["random_mean"]["math"]["loss"], r


# ------------------------------------------------------------------------------------------------
# configuration (method=easyep), loading through rucai.runtime, tasks


EASYEP_EXPERIMENTS = ["deepseek_r1_half_math", "deepseek_r1_prune", "deepseek_r1_score", "mixed_domains",
                      "rss_bench", "specialise", "tiny_dsv3"]


def test_every_easyep_experiment_selects_the_typed_method():
    from rucai import cli
    from tests.conftest import compose_config

    assert sorted(e.split("/", 1)[1] for e in cli.experiments() if e.startswith("easyep/")) == EASYEP_EXPERIMENTS
    for exp in EASYEP_EXPERIMENTS:
        cfg = compose_config(f"experiment=easyep/{exp}", hydra_config=True)
        assert cfg.hydra.runtime.choices.method == "easyep", exp
        assert cfg.method.n_demos == 25 and cfg.method.keep_fraction == 0.5  # the authors' settings


@pytest.mark.parametrize("bad", ["method.n_demo=3", "method.model.random_init.famly=x", "method.run.step=3",
                                 "method.n_demos=many"])
def test_misspelled_or_mistyped_method_key_fails_at_compose(bad):
    from hydra.errors import ConfigCompositionException

    from tests.conftest import compose_config

    with pytest.raises(ConfigCompositionException):
        compose_config("experiment=easyep/tiny_dsv3", bad)


def test_misspelled_method_key_is_one_error_line(tmp_path):
    from tests.conftest import run_cli

    r = run_cli("experiment=easyep/tiny_dsv3", "method.n_demo=3", run_dir=tmp_path / "run", timeout=120)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:") and "n_demo" in lines[0], r.stderr
    assert not (tmp_path / "run").exists()  # nothing ran


def test_smoke_overlay_is_configuration_harmless_to_other_tasks():
    from tests.conftest import compose_config

    smoke = {e: compose_config(f"experiment=easyep/{e}", "debug=smoke").method for e in EASYEP_EXPERIMENTS}
    full = {e: compose_config(f"experiment=easyep/{e}").method for e in EASYEP_EXPERIMENTS}
    assert smoke["tiny_dsv3"].n_demos == 4 and smoke["tiny_dsv3"].max_length == 256
    assert smoke["deepseek_r1_prune"].src is None and smoke["deepseek_r1_prune"].random_src.family == "deepseek_v3"
    assert full["deepseek_r1_prune"].src and full["deepseek_r1_prune"].random_src.family is None
    assert smoke["specialise"].run.steps < full["specialise"].run.steps
    assert len(smoke["rss_bench"].sizes) == 1 and len(full["rss_bench"].sizes) == 2
    # what a task reads that the overlay does not shrink stays the experiment's
    assert smoke["deepseek_r1_score"].keep == 128 and smoke["deepseek_r1_score"].model.path == full["deepseek_r1_score"].model.path
    assert smoke["mixed_domains"].domains.keys() == full["mixed_domains"].domains.keys()


def test_tasks_have_no_smoke_branches_and_write_no_metrics_json():
    import inspect

    import rucai.easyep.tasks as t
    import rucai.eval.tasks as ev

    for mod in (t, ev):
        src = inspect.getsource(mod)
        assert "cfg.smoke" not in src and "metrics.json\")" not in src and '"metrics.json"' not in src
        assert "from_pretrained(" not in src and ".get(\"n_demos\"" not in src


def _hf_folder(tmp_path):
    from rucai.llm.models import char_tokenizer

    model = _tiny("qwen3_moe")
    model.save_pretrained(tmp_path / "src")
    char_tokenizer().save_pretrained(tmp_path / "src")
    return tmp_path / "src"


def test_load_model_honours_hardware_device_map(tmp_path, monkeypatch, from_pretrained_calls):
    from omegaconf import OmegaConf

    from rucai.easyep.config import ModelConfig
    from rucai.easyep.tasks import load_model

    src = _hf_folder(tmp_path)
    calls = from_pretrained_calls
    mcfg = OmegaConf.merge(OmegaConf.structured(ModelConfig), {"path": str(src), "dtype": "float32"})
    hw = {"name": "cpu_sharded", "accelerator": "cpu", "precision": "32-true", "device_map": "cpu",
          "max_memory": {"cpu": "4GiB"}, "offload_folder": str(tmp_path / "offload")}
    model, tok = load_model(mcfg, hw)
    kw = calls[-1]
    assert kw["device_map"] == "cpu" and kw["max_memory"] == {"cpu": "4GiB"}
    assert kw["offload_folder"] == str(tmp_path / "offload") and kw["trust_remote_code"] is False
    assert kw["dtype"] == torch.float32 and model.device.type == "cpu"
    assert tok.padding_side == "right" and tok.pad_token is not None
    load_model(mcfg, {"accelerator": "cpu"})  # no device_map: one device, nothing sharded
    assert "device_map" not in calls[-1] and "max_memory" not in calls[-1]


def test_score_placement_method_sharding_overrides_hardware():
    from rucai.easyep.tasks import placement
    from tests.conftest import compose_config

    cfg = compose_config("experiment=easyep/deepseek_r1_score")
    assert placement(cfg)["device_map"] == "auto" and placement(cfg)["max_memory"]["cpu"] == "64GiB"
    cfg = compose_config("experiment=easyep/deepseek_r1_score", "method.sharding.device_map=sequential",
                         "method.sharding.max_memory={0: 10GiB}")
    p = placement(cfg)
    assert p["device_map"] == "sequential" and p["max_memory"] == {0: "10GiB"} and p["offload_folder"] is None


def test_prune_task_smoke_prunes_a_random_source(tmp_path):
    from rucai.easyep.tasks import prune
    from tests.conftest import compose_config

    cfg = compose_config("experiment=easyep/deepseek_r1_prune", "debug=smoke", f"paths.output_dir={tmp_path}")
    m = prune(cfg)
    assert m["num_experts_before"] == 8 and m["num_experts_after"] == 4 and m["dst"] == str(tmp_path / "pruned")
    assert not (tmp_path / "metrics.json").exists()  # the dispatcher writes it, not the task
    pruned = load_causal_lm(tmp_path / "pruned", None, dtype="float32")
    assert all(b.experts.gate_up_proj.shape[0] == 4 for b in for_model(pruned).moe_blocks(pruned).values())
