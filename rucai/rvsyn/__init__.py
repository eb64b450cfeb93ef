"""RV-Syn (Wang, Jiang et al., Findings of EACL 2026; arXiv 2504.20426): mathematical reasoning data
synthesised from a structured function library. Seed solutions are decomposed into Python functions
(`gsm8k.py`: calculator annotations, deterministic; `decompose.py`: the interface and an LLM
decomposer), merged into a library (`library.py`), composed into new computational graphs
(`compose.py`), executed in the project's sandbox (`execute.py`, `graph.py`), back-translated into
problems (`backtranslate.py`), verified and exported as an SFT dataset (`pipeline.py`, one resumable
stage each); tasks in `rucai.rvsyn.tasks`, settings in `rucai.rvsyn.config`."""
