"""GRSU (Wang, Xia, Li et al., SIGIR 2025): conversational recommendation searched with a
generative-reward simulated user. `simulator` (Yes/No item scoring, critiques), `crs` (LLM or
retrieval CRS), `search` (beam search, candidate ranking), `metrics` (Recall/NDCG/MRR per label),
`matching` (titles to catalogue ids), `data` (ReDial turns), `prompts` (every prompt);
tasks in `rucai.grsu.tasks`."""
