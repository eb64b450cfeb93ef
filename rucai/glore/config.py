"""GLoRE method settings (`method=glore`). Sources: txy77/GLoRE (no licence; read, not copied) and
the paper; see experiments/glore/README.md. Only dataclasses here: this module is imported on the
CLI start-up path."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rucai.schema import method

# none: no edit; style / domain / both: the method; random: a random direction with the style
# vector's norm where the style vector goes; style_other_layer: the style vector of layer
# `other_layer` injected there (the control for the choice of layer)
CONDITIONS = ("none", "style", "domain", "both", "random", "style_other_layer")


@method("glore")  # above @dataclass: it registers the finished dataclass
@dataclass
class GLoRESettings:
    layer: int = 3  # decoder block whose output is read and edited (0-based; the authors' default)
    strength: float = 0.1  # h <- h + strength v, then rescaled to ||h||
    top_k: int = 5  # domain memory: nearest keys by cosine
    decode_injection: bool = True  # both vectors on every generated token too (the authors)
    other_layer: int = 15  # the control condition `style_other_layer`
    random_seed: int = 0  # the control condition `random`
    instruction: str = "Answer the following question step by step and put the final answer in \\boxed{}:"
    # demonstrations: long CoT from DeepSeek-R1's AIME 2023 traces (the text inside <think>), or the
    # authors' source, STILL's long-form thought data (`python -m rucai.data.download still`; the
    # text inside <|begin_of_thought|>, rows of `long_cot_domain`), cut to `max_cot_tokens` tokens;
    # short CoT generated greedily by the model itself on the same problems
    long_cot: str = "${paths.data_dir}/r1_aime23_traces/aime23_r1_traces.jsonl"
    long_cot_domain: Any = None  # STILL rows: keep this domain (math, physics, chemistry, biology, ...)
    max_demos: Any = None  # null: every trace
    max_cot_tokens: int = 16384  # long traces cut to this many tokens (fits the paper's 128k-context models)
    short_cot_tokens: int = 2048  # the budget of the model's own vanilla CoT
    # domain memory (math): MATH test problems outside MATH-500, in file order
    memory_source: str = "${paths.data_dir}/math/math_test.jsonl"
    exclude_source: str = "${paths.data_dir}/math/math500.jsonl"
    memory_size: int = 500
    conditions: list[str] = field(default_factory=lambda: list(CONDITIONS))
    needs_gpu: bool = False  # the paper-size experiments: stop in one line on a machine without a GPU
    vectors_dir: Any = None  # null: <run dir>/vectors; point several runs at one folder to share it
