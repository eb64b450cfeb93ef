"""R1-Searcher's method settings (`method=r1searcher`), typed: a misspelled key or a wrong type fails
when the config is composed; `check()` turns a bad value into one line (tasks call it first).

Defaults are the authors' released Qwen-2.5-7B-Base recipe (base prompt, REINFORCE++ with baseline,
64 prompts x 16 samples per rollout batch, 4 updates of 256 rollouts each, lr 2e-6, temperature 1.0,
top_p 0.95, KL 0, top-3 passages and at most 8 retrievals in training; greedy evaluation with top-5
passages and 9 rounds). A comment marks every value that is ours. Experiments override what differs (`experiments/r1searcher/*.yaml`); `debug=smoke` shrinks
them (`experiments/r1searcher/debug/smoke.yaml`). Light on purpose: imported at CLI start-up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rucai.errors import UserError
from rucai.rl.core import ALGOS, KL_MODES, LOSS_AGGS  # the shared RL core (no heavy imports)
from rucai.schema import method

SERVICES = ("inprocess", "http", "url")
STAGES = ("stage1", "stage2")
ROLLOUT_BACKENDS = ("hf", "vllm")  # RLStageConfig.rollout_backend


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) or hasattr(obj, "_get_node") else getattr(obj, key)


def check_stage(s: Any, name: str) -> None:
    """One-line errors for the values of an RL stage (`name`: stage1 | stage2)."""
    from rucai.r1searcher.rewards import REWARDS

    algo = _get(s, "algo")
    if algo not in ALGOS:
        raise UserError(f"method.{name}.algo={algo!r}; valid: {', '.join(ALGOS)}")
    reward = _get(s, "reward")
    if reward not in REWARDS:
        raise UserError(f"method.{name}.reward={reward!r}; valid: {', '.join(sorted(REWARDS))}")
    for k in ("steps", "prompts_per_step", "n_samples", "micro_batch_size", "topk", "max_tokens_per_round"):
        if int(_get(s, k)) < 1:
            raise UserError(f"method.{name}.{k}={_get(s, k)} must be >= 1")
    if _get(s, "max_searches") < 0 or _get(s, "checkpoint_every") < 0:
        raise UserError(f"method.{name}.max_searches and method.{name}.checkpoint_every must be >= 0")
    mrt = _get(s, "max_response_tokens")
    if mrt is not None and int(mrt) < 1:
        raise UserError(f"method.{name}.max_response_tokens={mrt} must be >= 1 (or null: no cap)")
    if not 0.0 < float(_get(s, "top_p")) <= 1.0 or float(_get(s, "temperature")) < 0:
        raise UserError(f"method.{name}: top_p must be in (0, 1] and temperature >= 0")
    rb = _get(s, "rollout_backend")
    if rb not in ROLLOUT_BACKENDS:
        raise UserError(f"method.{name}.rollout_backend={rb!r}; valid: {', '.join(ROLLOUT_BACKENDS)}")
    for k, valid in (("kl_mode", KL_MODES), ("loss_agg", LOSS_AGGS)):
        if _get(s, k) not in valid:
            raise UserError(f"method.{name}.{k}={_get(s, k)!r}; valid: {', '.join(valid)}")
    if int(_get(s, "max_epochs")) < 1:
        raise UserError(f"method.{name}.max_epochs={_get(s, 'max_epochs')} must be >= 1")
    tbs, rollouts = _get(s, "train_batch_size"), int(_get(s, "prompts_per_step")) * int(_get(s, "n_samples"))
    if tbs is not None and (int(tbs) < 1 or rollouts % int(tbs)):
        raise UserError(f"method.{name}.train_batch_size={tbs} must divide prompts_per_step x n_samples = {rollouts} "
                        f"(or null: one update per rollout batch)")


@dataclass
class RetrieverConfig:
    # the authors query a retrieval server; http starts a 127.0.0.1 service for the run, url uses a
    # running one (`python -m rucai.retrieval serve`), inprocess searches in the rollout process
    service: str = "http"
    # BM25 over the HotpotQA dev-500 context pool: ours, the only corpus shipped here (the authors
    # index HotpotQA abstracts for training and KILT 2019-08 for 2Wiki/Musique/Bamboogle)
    kinds: list[str] = field(default_factory=lambda: ["bm25"])  # indexes built into index_dir
    kind: str = "bm25"  # the index searched
    index_dir: str = "${paths.cache_dir}/r1searcher/index_hotpotqa_dev500"
    source: str = "hotpotqa_contexts"  # hotpotqa_contexts | kilt | jsonl | tsv | r1searcher_tsv (rucai.retrieval.corpus)
    # the dense kind's encoder: all-minilm-l6-v2 (ours) | bge-large-en-v1.5 (the authors': CLS, normalised,
    # query instruction; rucai.retrieval.encoders) | a model folder
    encoder: str = "all-minilm-l6-v2"
    input: str = "${paths.data_dir}/multihop_qa/hotpotqa_dev500_with_contexts.jsonl"
    words: int = 100  # passage length in words (the authors' KILT split)
    limit: int | None = None  # index only the first N source records (null: all)
    url: str | None = None  # service=url: http://127.0.0.1:<port>
    host: str = "127.0.0.1"  # service=http
    port: int = 0  # service=http; 0: a free port


@dataclass
class RLStageConfig:
    """One RL stage step: `prompts_per_step` questions x `n_samples` rollouts (OpenRLHF's rollout_batch_size
    x n_samples_per_prompt) -> `max_epochs` passes over them in shuffled minibatches of `train_batch_size`
    rollouts, one clipped policy update each, the ratio against the rollout-time log-probs."""

    data: str = "r1searcher_stage1_train"  # <paths.data_dir>/multihop_qa/<data>.jsonl
    reward: str = "paper_stage1"  # rucai.r1searcher.rewards registry
    algo: str = "reinforce_pp_baseline"  # reinforce_pp_baseline | grpo
    steps: int = 100  # ours: the authors train by episodes over their data (OpenRLHF num_episodes)
    prompts_per_step: int = 64  # OpenRLHF --rollout_batch_size (Qwen script: 64)
    n_samples: int = 16
    # rollouts per optimizer update (OpenRLHF --train_batch_size; Qwen script: 256, so 4 updates per step);
    # null: the whole rollout batch in one update (ratio 1, clipping inactive)
    train_batch_size: int | None = 256
    max_epochs: int = 1  # passes over each rollout batch (OpenRLHF --max_epochs)
    lr: float = 2.0e-6
    weight_decay: float = 0.0
    kl_coef: float = 0.0
    # reward: k1 KL to the reference folded into the per-token reward/return, for both algos (OpenRLHF
    # compute_reward with --init_kl_coef, as every released script); loss: k3 KL as a loss term (GRPO paper,
    # OpenRLHF --use_kl_loss; not used by the authors)
    kl_mode: str = "reward"
    clip_eps: float = 0.2
    # seq_mean: each rollout's token-mean loss, averaged over rollouts (OpenRLHF PolicyLoss masked_mean with
    # micro_train_batch_size 1); token_mean: summed over all loss tokens of the minibatch / their count
    loss_agg: str = "seq_mean"
    max_grad_norm: float = 1.0
    micro_batch_size: int = 8  # sequences per forward/backward chunk (memory only, not the update)
    temperature: float = 1.0
    top_p: float = 0.95  # the authors' rollout SamplingParams (OpenRLHF-RAG experience_maker, hard-coded)
    topk: int = 3  # passages per query in training
    max_searches: int = 8  # retrievals per rollout in training
    max_tokens_per_round: int = 512
    max_response_tokens: int | None = 8192  # generated tokens per rollout over all rounds (null: no cap)
    gradient_checkpointing: bool = True
    # a step checkpoint (policy, optimizer, step, RNG states, data order) every N steps into
    # <stage>/checkpoints/last.ckpt (0: only the final policy); the GenR1-Searcher fork of the
    # released scripts saves every 25 steps (OpenRLHF --save_steps)
    checkpoint_every: int = 25
    # rollout generation (ours, issue 13 item 4): hf = the policy itself through transformers generate
    # (the CPU path); vllm = an in-process vLLM engine built from the stage's initial policy, the
    # policy's weights pushed into it after every update (rucai/r1searcher/vllm_sync.py)
    rollout_backend: str = "hf"
    rollout_engine: dict[str, Any] = field(default_factory=dict)  # vllm.LLM arguments (rollout_backend=vllm)

    def __post_init__(self) -> None:
        check_stage(self, "stage")


@dataclass
class EvalConfig:
    sets: list[str] = field(default_factory=lambda: ["hotpotqa_500", "2wiki_500", "musique_500", "bamboogle"])
    modes: list[str] = field(default_factory=lambda: ["r1searcher", "rag", "naive"])
    limit: int | None = None  # questions per set (null: all)
    max_tokens: int = 512  # per round (the authors' eval_search_loacl.py)
    topk: int = 5
    max_rounds: int = 9
    # answer normalisation for EM/F1/Cover-EM: r1searcher (the authors' evaluation and reward servers:
    # punctuation -> space) | squad (punctuation removed; scores their released outputs 0.4-1 points
    # lower, experiments/r1searcher/README.md)
    normalization: str = "r1searcher"
    # null | self (the evaluated model) | an llm config mapping, e.g. {backend: openai, model: gpt-4o-mini}
    # for the paper's LLM-as-judge accuracy
    judge: Any = None


@dataclass
class SplitConfig:
    """A fixed train / evaluation split of one question file (ours, issue 13 item 5; `rucai/r1searcher/split.py`):
    the data names `split_train` (stage data) and `split_eval` (eval sets) select its parts. Its seed is
    the split's own, independent of the run seed. The default file is the one the default BM25 pool
    indexes, so all paragraphs of every split question are in the pool."""

    source: str = "hotpotqa_dev500_with_contexts"  # <paths.data_dir>/multihop_qa/<source>.jsonl
    n_eval: int = 100  # the first n_eval questions of the shuffled file
    n_train: int = 400  # the next n_train
    seed: int = 0


@dataclass
class TinyPolicyConfig:
    """A random-init Llama on the policy's tokenizer (debug=smoke: the real code path in seconds)."""

    hidden: int = 32
    layers: int = 2


@method("r1searcher")
@dataclass
class R1SearcherMethod:
    prompt_style: str = "base"  # base (`Assistant: <think>`) | chat (system prompt + template) | chat_demo
    init_from: str | None = None  # null: llm.model; or an HF folder / .gguf / alias / a previous run dir
    stage: str = "stage1"  # r1searcher.train: which stage to run
    tiny_policy: TinyPolicyConfig | None = None  # set: train a random tiny policy instead (smoke)
    retriever: RetrieverConfig = field(default_factory=RetrieverConfig)
    stage1: RLStageConfig = field(default_factory=RLStageConfig)
    # the released Qwen-base stage-2 server: answer F1, -2 when malformed, plus its strict checks
    stage2: RLStageConfig = field(default_factory=lambda: RLStageConfig(
        data="r1searcher_stage2_train", reward="qwen_base_stage2", steps=500))
    eval: EvalConfig = field(default_factory=EvalConfig)
    split: SplitConfig = field(default_factory=SplitConfig)  # used only where data is split_train|split_eval


def check(m: Any) -> None:
    """Validate the whole `method` section (a DictConfig or an R1SearcherMethod); one line per error."""
    from rucai.r1searcher.evaluate import MODES
    from rucai.r1searcher.prompts import PROMPT_STYLES

    if m is None:
        raise UserError("r1searcher tasks need method=r1searcher settings: use experiment=r1searcher/smollm2")
    style = _get(m, "prompt_style")
    if style not in PROMPT_STYLES:
        raise UserError(f"method.prompt_style={style!r}; valid: {', '.join(PROMPT_STYLES)}")
    if _get(m, "stage") not in STAGES:
        raise UserError(f"method.stage={_get(m, 'stage')!r}; valid: {', '.join(STAGES)}")
    for name in STAGES:
        check_stage(_get(m, name), name)
    service = _get(_get(m, "retriever"), "service")
    if service not in SERVICES:
        raise UserError(f"method.retriever.service={service!r}; valid: {', '.join(SERVICES)}")
    e = _get(m, "eval")
    bad = [x for x in _get(e, "modes") if x not in MODES]
    if bad:
        raise UserError(f"method.eval.modes: {bad[0]!r} is not a mode; valid: {', '.join(MODES)}")
    if _get(e, "limit") is not None and int(_get(e, "limit")) < 1:
        raise UserError(f"method.eval.limit={_get(e, 'limit')} must be >= 1 (or null: every question)")
    for k in ("max_tokens", "topk", "max_rounds"):
        if int(_get(e, k)) < 1:
            raise UserError(f"method.eval.{k}={_get(e, k)} must be >= 1")
    from rucai.eval.qa import NORMALIZATIONS

    if _get(e, "normalization") not in NORMALIZATIONS:
        raise UserError(f"method.eval.normalization={_get(e, 'normalization')!r}; valid: {', '.join(NORMALIZATIONS)}")
    tp = _get(m, "tiny_policy")
    if tp is not None and (int(_get(tp, "hidden")) % 4 or int(_get(tp, "hidden")) < 4 or int(_get(tp, "layers")) < 1):
        raise UserError("method.tiny_policy needs hidden a positive multiple of 4 (4 heads) and layers >= 1 "
                        "(or null: the real policy)")
