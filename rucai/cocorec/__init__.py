"""CoCoRec / CCFRec (Liu, Zheng, Zhao, Wen; KDD 2025): semantic codes bridging text and
collaborative signals in sequential recommendation.

- `codes`: the item side: text views, PCA-whitened per view, product (or per-view residual)
  quantisation into code tokens; the frozen per-view text vectors the model reads.
- `model`: code embeddings fused with the text views (Q-Former-like), a SASRec-style causal
  encoder over the fused items, and the three losses (recommendation, masked code modelling,
  masked sequence alignment).
- `config`: `method=cocorec` settings; `tasks`: `task=cocorec.train`.
"""
