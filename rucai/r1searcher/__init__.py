"""R1-Searcher (Song et al., 2025): search-interleaved rollouts and two-stage outcome-reward RL.

  prompts   the authors' base (`Assistant: <think>`) and chat prompts, tags, baselines' prompts
  rewards   reward registry: the paper's stage-1/stage-2 rewards and the released-code variants
  rollout   the rollout engine over `rucai.llm` backends (stop at the query tag, retrieve, insert
            the documents, continue) and the token-level loss mask
  rl        REINFORCE++ (with baseline) / GRPO-style advantages, masked policy-gradient training
  evaluate  multi-hop QA evaluation (R1-Searcher, standard RAG, no retrieval)
  config    the typed `method=r1searcher` settings (defaults: the authors' Qwen recipe) and their checks
  tasks     `r1searcher.pipeline`, `r1searcher.train`, `r1searcher.eval` (stages, resume)
"""
