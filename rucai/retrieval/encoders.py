"""Text encoders for dense indexes: a sentence-transformers model (all-MiniLM-L6-v2, our CPU default) or
a Hugging Face encoder with the pooling, normalisation and query instruction it was trained with.

  bge-large-en-v1.5  the R1-Searcher authors' retriever (`train/wiki_corpus_load.py`,
                     `wiki_corpus_index_bulid/build_corpus_embedding.py`: FlagEmbedding's FlagModel):
                     CLS pooling, L2-normalised, fp32; queries get the instruction
                     "Represent this sentence for searching relevant passages:" prepended as is (FlagModel
                     formats "{}{}", no space; BERT's tokenizer splits ":" from the next word, so the token
                     ids are the same with or without one), queries up to 512 tokens, passages up to 300
                     (their `encode_corpus(..., max_length=300)`), passages without instruction
  all-minilm-l6-v2   sentence-transformers' own pooling (mean) and normalisation, no instruction

`--encoder` takes a name above, the hub id (`BAAI/bge-large-en-v1.5`), or a local folder: a folder whose
name is a known encoder (`/models/bge-large-en-v1.5`) gets that encoder's settings; any other folder is
a Hugging Face encoder with CLS pooling and no instruction (`--pooling`, `--query-prefix` change that),
unless it is a sentence-transformers folder (`modules.json`), which, like other hub ids, loads as before. The
resolved spec is written next to the index (`dense/encoder.json`), so search encodes queries exactly as
the build encoded passages. Heavy imports (torch, transformers) stay inside functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rucai.errors import UserError

BGE_QUERY_INSTRUCTION = "Represent this sentence for searching relevant passages:"


@dataclass(frozen=True)
class EncoderSpec:
    name: str  # the known name, or the model given
    model: str  # hub id or local folder
    backend: str = "hf"  # hf | sentence_transformers
    pooling: str = "cls"  # hf: cls | mean
    normalize: bool = True
    query_prefix: str = ""
    query_max_length: int = 512
    passage_max_length: int = 512


ENCODERS: dict[str, EncoderSpec] = {
    "bge-large-en-v1.5": EncoderSpec("bge-large-en-v1.5", "BAAI/bge-large-en-v1.5", "hf", "cls", True,
                                     BGE_QUERY_INSTRUCTION, 512, 300),
    "all-minilm-l6-v2": EncoderSpec("all-minilm-l6-v2", "all-minilm-l6-v2", "sentence_transformers", "mean", True,
                                    "", 256, 256),
}
POOLINGS = ("cls", "mean")


def resolve_spec(encoder: str | dict | EncoderSpec, **overrides: Any) -> EncoderSpec:
    """An EncoderSpec from a known name, a hub id or folder, or a stored spec (dict); `overrides` set fields."""
    if isinstance(encoder, EncoderSpec):
        spec = encoder
    elif isinstance(encoder, dict):
        spec = EncoderSpec(**encoder)
    else:
        key = str(encoder).lower()
        base = key.rstrip("/").split("/")[-1]
        if key in ENCODERS:
            spec = ENCODERS[key]
        elif base in ENCODERS and ENCODERS[base].backend == "hf":  # BAAI/bge-large-en-v1.5 or a local copy
            spec = replace(ENCODERS[base], model=str(encoder))
        elif key in ("sentence-transformers/all-minilm-l6-v2",):
            spec = ENCODERS["all-minilm-l6-v2"]
        elif Path(str(encoder)).expanduser().is_dir() and not (Path(str(encoder)).expanduser() / "modules.json").is_file():
            spec = EncoderSpec(name=str(encoder), model=str(encoder))  # a plain Hugging Face encoder folder
        else:  # a sentence-transformers folder or hub id, as before
            spec = EncoderSpec(name=str(encoder), model=str(encoder), backend="sentence_transformers", pooling="mean")
    spec = replace(spec, **{k: v for k, v in overrides.items() if v is not None})
    if spec.backend not in ("hf", "sentence_transformers") or spec.pooling not in POOLINGS:
        raise UserError(f"encoder {spec.name!r}: backend must be hf|sentence_transformers and pooling "
                        f"{'|'.join(POOLINGS)} (got {spec.backend}, {spec.pooling})")
    return spec


class HFEncoder:
    """A Hugging Face encoder as FlagEmbedding's FlagModel runs it: tokenize (pad, truncate to the
    max length), last hidden state, CLS (or masked mean) pooling, L2 normalisation; queries get the
    instruction prepended."""

    def __init__(self, model: Any, tokenizer: Any, spec: EncoderSpec, batch_size: int = 64,
                 device: str | None = None) -> None:
        import torch

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model.to(self.device).eval()
        self.tokenizer, self.spec, self.batch_size = tokenizer, spec, int(batch_size)

    @classmethod
    def load(cls, spec: EncoderSpec, batch_size: int = 64, device: str | None = None) -> HFEncoder:
        from rucai import runtime

        try:
            tok = runtime.load_tokenizer(spec.model)
            model = runtime.load_encoder(spec.model)
        except UserError as e:  # offline / unknown repo / not a model folder
            raise UserError(f"{e}; download it first (`huggingface-cli download {spec.model}` online) and pass "
                            f"--encoder <its folder> (method.retriever.encoder=<its folder>)") from None
        return cls(model, tok, spec, batch_size, device)

    def _encode(self, texts: Sequence[str], max_length: int) -> Any:
        import numpy as np
        import torch

        out = []
        with torch.no_grad():
            for b in range(0, len(texts), self.batch_size):
                enc = self.tokenizer(list(texts[b:b + self.batch_size]), padding=True, truncation=True,
                                     max_length=max_length, return_tensors="pt").to(self.device)
                hidden = self.model(**enc, return_dict=True).last_hidden_state
                if self.spec.pooling == "cls":
                    emb = hidden[:, 0]
                else:
                    m = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                    emb = (hidden * m).sum(1) / m.sum(1)
                if self.spec.normalize:
                    emb = torch.nn.functional.normalize(emb, dim=-1)
                out.append(emb.float().cpu().numpy())
        return np.ascontiguousarray(np.concatenate(out), dtype="float32")

    def encode_queries(self, queries: Sequence[str]) -> Any:
        return self._encode([f"{self.spec.query_prefix}{q}" for q in queries], self.spec.query_max_length)

    def encode_passages(self, passages: Sequence[str]) -> Any:
        return self._encode(list(passages), self.spec.passage_max_length)


class STEncoder:
    """A sentence-transformers model (its own pooling); the query prefix, if any, prepended."""

    def __init__(self, spec: EncoderSpec, batch_size: int = 64) -> None:
        from rucai.rec.embeddings import load_encoder

        self.spec, self.batch_size = spec, int(batch_size)
        self.model = load_encoder(spec.model)

    def _encode(self, texts: Sequence[str]) -> Any:
        import numpy as np

        emb = self.model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=self.spec.normalize,
                                convert_to_numpy=True, show_progress_bar=False)
        return np.ascontiguousarray(emb, dtype="float32")

    def encode_queries(self, queries: Sequence[str]) -> Any:
        return self._encode([f"{self.spec.query_prefix}{q}" for q in queries])

    def encode_passages(self, passages: Sequence[str]) -> Any:
        return self._encode(passages)


def load_text_encoder(spec: EncoderSpec, batch_size: int = 64) -> HFEncoder | STEncoder:
    return STEncoder(spec, batch_size) if spec.backend == "sentence_transformers" else HFEncoder.load(spec, batch_size)
