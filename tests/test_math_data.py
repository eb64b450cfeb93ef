"""Math benchmark loaders: every data config loads the real files with sane gold answers."""

import json

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from rucai import cli, schema
from rucai.data.math import INSTRUCTIONS, load_split
from rucai.errors import UserError
from tests.conftest import DATA_DIR, needs_data

schema.register()
EXPECTED = {"olymmath": 400, "olymmath_en_easy": 100, "olymmath_zh_hard": 100, "math500": 500, "math": 5000,
            "aime24": 30, "aime25": 30, "amc23": 40, "gsm8k": 1319, "hmmt_feb_2025": 30}


def _bench(name, data_dir=DATA_DIR):
    with initialize_config_dir(version_base="1.3", config_dir=str(cli.CONF_DIR)):
        cfg = compose("config", overrides=[f"data={name}", f"paths.data_dir={data_dir}"])
    return instantiate(cfg.data, _convert_="all")


MATH_CONFIGS = sorted(p.stem for p in (cli.CONF_DIR / "data" / "math").glob("*.yaml"))


@pytest.mark.parametrize("name", MATH_CONFIGS)
def test_benchmark_configs_load_tiny_data(name, tiny_data_dir):
    """tests/tiny_data.py keeps every math config's file names, fields and gold formats."""
    problems = _bench(f"math/{name}", tiny_data_dir).load()
    assert problems and all(p.problem and p.answer for p in problems)
    assert len({p.id for p in problems}) == len(problems)


@needs_data("math")
@needs_data("olymmath")
@pytest.mark.parametrize("name,count", sorted(EXPECTED.items()))
def test_benchmark_configs_load_real_data(name, count):
    problems = _bench(f"math/{name}").load()
    assert len(problems) == count
    assert all(p.problem and p.answer for p in problems)
    assert len({p.id for p in problems}) == count


@needs_data("olymmath")
def test_olymmath_metadata_and_official_prompts():
    problems = _bench("math/olymmath").load()
    assert {(p.language, p.tier) for p in problems} == {("en", "easy"), ("en", "hard"), ("zh", "easy"), ("zh", "hard")}
    zh = next(p for p in problems if p.language == "zh")
    assert zh.prompt().startswith(INSTRUCTIONS["zh"]) and zh.prompt().endswith(zh.problem)
    en = next(p for p in problems if p.language == "en")
    assert en.prompt().startswith("Please reason step by step, and put your final answer within \\boxed{}.\n\n")
    assert {p.subject for p in problems if p.language == "en"} == {"Algebra", "Geometry", "Number Theory", "Combinatorics"}


@needs_data("math")
def test_gold_formats():
    gsm = _bench("math/gsm8k").load()
    assert gsm[0].answer == "18"  # after '####'
    assert _bench("math/hmmt_feb_2025").load()[0].answer == "103"  # \boxed{103}
    assert _bench("math/amc23").load()[0].answer == "27"  # 27.0 -> 27
    assert _bench("math/math").load()[0].answer == "2"  # last \boxed{} of the solution


def test_hf_folder_layout_and_missing_data(tmp_path):
    shard = tmp_path / "hf" / "data"
    shard.mkdir(parents=True)
    (shard / "test-00000.jsonl").write_text("\n".join(json.dumps({"question": f"q{i}", "answer": str(i)})
                                                      for i in range(3)))
    probs = load_split(tmp_path / "hf", benchmark="x", problem_field="question")
    assert [p.answer for p in probs] == ["0", "1", "2"] and probs[0].problem == "q0"
    with pytest.raises(UserError, match="benchmark data .* not found"):
        load_split(tmp_path / "missing.jsonl", benchmark="x")
