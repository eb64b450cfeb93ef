"""MTGRec (Zheng et al., SIGIR 2025): multi-identifier item tokenization + curriculum pre-training."""
