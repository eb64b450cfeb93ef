"""CoCoRec method settings (`method=cocorec`): how items become code tokens and text vectors.

Sources: BishopLiu/CCFRec `vq/generate_faiss_multi_emb.py` + `vq/instrument.yaml` (codes),
`encode_emb.py` (views), `main.py` (the model's text vectors = PCA(embedding size, whitened) of each
view). The model's own settings are `model` (conf/model/cocorec.yaml). Only dataclasses here: this
module is imported on the CLI start-up path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rucai.schema import method


@method("cocorec")  # above @dataclass: it registers the finished dataclass
@dataclass
class CoCoRecSettings:
    # text views, each encoded on its own (authors: title brand features categories description)
    views: list[str] = field(default_factory=lambda: ["title", "brand", "features", "categories", "description"])
    encoder: str = "all-minilm-l6-v2"  # authors: sentence-t5-base (offline here: the packaged MiniLM)
    encode_batch_size: int = 64
    encode_device: Any = None  # null: cpu
    code_pca_dim: int = 128  # pca_size: each view PCA-whitened before quantisation
    text_dim: Any = "${model.hidden_size}"  # the model's frozen text vectors: PCA(embedding size, whitened)
    quantizer: str = "pq"  # pq: one IndexPQ over the concatenated views; rq: one residual quantiser per view
    codes_per_view: int = 4  # 5 views x 4 = 20 codes (IndexPQ(640, 20, 8))
    bits: int = 8  # 256 codes per level
    seed: int = 0  # faiss k-means seed (codes are a deterministic function of the data and this)
    faiss_threads: int = 1
    cache_dir: Any = None  # null: $RUCAI_CACHE_DIR or ~/.cache/rucai

