"""UTGRec (Zheng, Lu, Chen, Zhao, Wen; arXiv 2504.04405): a universal item tokenizer pre-trained
across domains, for transferable generative recommendation.

- `quantizer`: SimVQ codebooks (W(E)), the tree quantiser over code-state differences (root
  codebook for level 1, one shared leaf codebook for levels 2-3), VQ loss, resumable warm-up.
- `tokenizer`: the text-only CPU tokenizer: frozen MiniLM token states read by a small
  transformer head with three code queries, the tree quantiser, a one-layer masked-text decoder,
  co-occurrence InfoNCE and positive reconstruction.
- `collisions`: unique code tuples for all items (next-nearest leaf entries, then a random tail).
- `data`: frozen MiniLM token states per item, whole-word-masked text batches, co-occurrence
  positives.
"""
