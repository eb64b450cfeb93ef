"""STREAM-Rec (Zhang et al., arXiv 2504.09627, "Slow Thinking for Sequential Recommendation"):
pre-training on targets extended with similar items (`targets`), iterative-inference annotation of
thinking tokens (`annotator`) and SFT on them, GRPO with named rewards (`rewards`, `rucai.rl.core`);
the model is a TIGER whose decoding generates the thinking tokens freely, then the item through the
trie (`model`). Tasks: `rucai.streamrec.tasks`."""
