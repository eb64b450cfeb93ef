"""UTGRec tokenizer data, text-only CPU path: item text, frozen token states, masking, co-occurrence.

What the authors' code (`RUCAIBox/UTGRec`, `data.py` / `utils.py` / `arguments.py`) does, and what
this module keeps:

- **Item text**: one pre-built sentence per item (`metadata.sentence.json`, made by a preprocessing
  step the authors do not release; the file name is the GenRec/MTGRec convention, where each field's
  value is cleaned, ends with one "." and the values are concatenated with no field labels).
  `item_texts` builds that sentence from the configured fields of `SequenceData.item_text`.
- **Items trained on**: `get_datasets(mode="train")` builds `ItemMMDataset(mode="train")`, whose
  items are those of the training parts `s[:-2]` of the users' sequences (codes for every item are
  generated afterwards). `UTGItemDataset(items="train")` is that; `items="all"` trains on 1..N.
- **Co-occurrence** (`get_co_occurring_items`): the neighbours of an item are the items directly
  before and after it in each user's training part `s[:-2]` (window 1, a set); an item with none is
  its own neighbour; the positive is drawn uniformly from the sorted neighbour set at every draw.
- **Text decoder masking** (`DataCollatorForWholeWordMask` with `mlm_probability=dec_mlm_probability`,
  default 1.0 and never overridden by the scripts, plus `torch_mask_tokens_bert`): words (a piece
  plus its "##" continuations; [CLS]/[SEP] skipped) are taken in a random order until
  round(len(ids) * rate) tokens (at most 512) are covered, so with rate 1.0 every word is selected;
  then, independently per token, 80% -> [MASK], half of the rest (10%) -> a random non-special
  token, the rest kept; labels are the original ids at selected positions, -100 elsewhere; special
  tokens and padding are never selected.

In place of Qwen2-VL + LoRA, the encoder side reads frozen all-MiniLM-L6-v2 last-layer token states
(`TokenStates`, precomputed once per item and cached under `<cache_dir>/utgrec/<sha256>.npz`); the
text decoder reads the same WordPiece ids and shares MiniLM's frozen word-embedding matrix as LM
head. Batch keys (consumed by the model side, `rucai.utgrec.tokenizer`): see `collate_utg`.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from rucai.data.resumable import ResumableLoader
from rucai.errors import UserError

log = logging.getLogger(__name__)

DEFAULT_ENCODER = "all-minilm-l6-v2"
DEFAULT_MAX_TOKENS = 128
CACHE_VERSION = "utgrec-token-states-v1"
MAX_PREDICTIONS = 512  # DataCollatorForWholeWordMask._whole_word_mask default
# field order when `fields` is not given: short identifying fields first, long free text last
PREFERRED_FIELDS = ("title", "movie_title", "release_year", "brand", "class", "categories", "feature",
                    "features", "description")
BATCH_KEYS = ("item", "states", "state_mask", "pos_states", "pos_state_mask", "text_input", "text_labels",
              "text_mask", "pos_text_input", "pos_text_labels", "pos_text_mask")

_TAG = re.compile(r"</?\w+[^>]*>")
_WS = re.compile(r"\s+")


# ----------------------------------------------------------------------------------------- item text

def clean_value(v: Any) -> str:
    """One field value as a sentence: html-unescaped, tags/quotes/newlines dropped, whitespace
    collapsed, trailing dots collapsed to exactly one "." ("" when nothing is left)."""
    if v is None:
        return ""
    if isinstance(v, (list, tuple)):
        v = " ".join(clean_value(x).rstrip(".") for x in v if clean_value(x))
    s = html.unescape(str(v))
    s = _TAG.sub("", s).replace('"', "")
    s = _WS.sub(" ", s).strip().rstrip(".").strip()
    return f"{s}." if s else ""


def default_fields(data) -> list[str]:
    """The metadata keys present in `data.item_text`, PREFERRED_FIELDS order first, then the rest sorted."""
    keys: set[str] = set()
    for meta in data.item_text.values():
        keys.update(meta or {})
    first = [f for f in PREFERRED_FIELDS if f in keys and f != "description"]
    rest = sorted(keys - set(PREFERRED_FIELDS))
    return first + rest + (["description"] if "description" in keys else [])


def item_texts(data, fields: Sequence[str] | None = None) -> list[str]:
    """Texts of items 1..N: the cleaned values of `fields` (default: `default_fields(data)`),
    concatenated with single spaces, no field labels (the authors' `metadata.sentence.json` style).
    ml-100k (RecBole): "Toy Story. 1995. Animation Children's Comedy." Items without any of the
    fields get ""."""
    fields = list(fields) if fields is not None else default_fields(data)
    if not fields:
        raise UserError(f"{data.name}: no item text fields; pass fields=[title,...] (the item metadata keys)")
    out = []
    for i in range(1, data.num_items + 1):
        meta = data.item_text.get(i) or {}
        out.append(" ".join(p for p in (clean_value(meta.get(f)) for f in fields) if p))
    return out


# ------------------------------------------------------------------------------------- token states

def states_cache_key(encoder: str, max_tokens: int, texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"kind": CACHE_VERSION, "encoder": encoder, "max_tokens": int(max_tokens)},
                        sort_keys=True).encode())
    for t in texts:
        b = t.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def load_token_encoder(encoder: str = DEFAULT_ENCODER):
    """(tokenizer, transformer) of a sentence-transformers folder: the bare HF model whose
    `last_hidden_state` are the token states (the packaged all-MiniLM-L6-v2 resolves offline)."""
    from rucai.rec.embeddings import resolve_encoder
    from rucai.runtime import load_encoder, load_tokenizer

    path = resolve_encoder(encoder)
    tok = load_tokenizer(path)
    model = load_encoder(path).eval()
    return tok, model


def vocab_facts(tok) -> dict[str, Any]:
    """Vocabulary facts the masking and the decoder need, from a (BERT WordPiece) HF tokenizer."""
    if tok.mask_token_id is None or tok.pad_token_id is None:
        raise UserError("the UTGRec text decoder needs a tokenizer with [MASK] and [PAD] (a BERT-style encoder)")
    v = len(tok)
    tokens = tok.convert_ids_to_tokens(list(range(v)))
    return {
        "vocab_size": v,
        "mask_token_id": int(tok.mask_token_id),
        "pad_token_id": int(tok.pad_token_id),
        "cls_token_id": int(tok.cls_token_id) if tok.cls_token_id is not None else -1,
        "sep_token_id": int(tok.sep_token_id) if tok.sep_token_id is not None else -1,
        "special_ids": sorted(int(i) for i in tok.all_special_ids),
        "continuation": np.array([str(t).startswith("##") for t in tokens], dtype=bool),
    }


class TokenStates:
    """Frozen per-item token states [L_i, D] (float16 on disk), the item's WordPiece ids (the same
    tokenisation, [CLS] ... [SEP], at most `max_tokens`), and the tokenizer/LM-head facts.

    Item ids are 1..N (`states(i)`, `input_ids(i)`); row arrays are stored flat with `offsets`."""

    def __init__(self, flat_states: np.ndarray, flat_ids: np.ndarray, offsets: np.ndarray,
                 word_embeddings: np.ndarray, facts: Mapping[str, Any], encoder: str, max_tokens: int):
        self.flat_states, self.flat_ids, self.offsets = flat_states, flat_ids, offsets
        self.word_embeddings = np.asarray(word_embeddings, dtype=np.float32)  # [V, D], the shared LM head
        self.vocab_size = int(facts["vocab_size"])
        self.mask_token_id = int(facts["mask_token_id"])
        self.pad_token_id = int(facts["pad_token_id"])
        self.cls_token_id = int(facts["cls_token_id"])
        self.sep_token_id = int(facts["sep_token_id"])
        self.special_ids = [int(i) for i in facts["special_ids"]]
        self.continuation = np.asarray(facts["continuation"], dtype=bool)  # [V] token starts with "##"
        self.encoder, self.max_tokens = encoder, int(max_tokens)

    @property
    def num_items(self) -> int:
        return len(self.offsets) - 1

    @property
    def dim(self) -> int:
        return int(self.flat_states.shape[1])

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def states(self, item: int) -> np.ndarray:
        return self.flat_states[self.offsets[item - 1]: self.offsets[item]]

    def input_ids(self, item: int) -> np.ndarray:
        return self.flat_ids[self.offsets[item - 1]: self.offsets[item]].astype(np.int64)

    def batch(self, items: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Unmasked (states [B,T,D] float32, state_mask [B,T] bool) of `items`, right-padded: the
        encoder input for generating codes."""
        states, mask = _pad([torch.from_numpy(self.states(int(i)).astype(np.float32)) for i in items], 0.0)
        return states, mask

    def random_candidates(self) -> torch.Tensor:
        """Ids a 10% "random token" replacement draws from: the vocabulary minus special tokens."""
        keep = np.ones(self.vocab_size, dtype=bool)
        keep[[i for i in self.special_ids if 0 <= i < self.vocab_size]] = False
        return torch.from_numpy(np.flatnonzero(keep)).long()

    # -- disk
    def save(self, path: str | os.PathLike) -> None:
        from rucai.utils.io import atomic_writer

        meta = {"vocab_size": self.vocab_size, "mask_token_id": self.mask_token_id,
                "pad_token_id": self.pad_token_id, "cls_token_id": self.cls_token_id,
                "sep_token_id": self.sep_token_id, "special_ids": self.special_ids,
                "encoder": self.encoder, "max_tokens": self.max_tokens}
        with atomic_writer(path, "wb") as f:
            np.savez(f, states=self.flat_states.astype(np.float16), ids=self.flat_ids.astype(np.int32),
                     offsets=self.offsets.astype(np.int64),
                     word_embeddings=self.word_embeddings.astype(np.float16),
                     continuation=self.continuation, meta=np.array(json.dumps(meta)))

    @classmethod
    def load(cls, path: str | os.PathLike) -> TokenStates:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            facts = dict(meta, continuation=z["continuation"])
            return cls(z["states"], z["ids"], z["offsets"], z["word_embeddings"], facts,
                       meta["encoder"], meta["max_tokens"])

    # -- build
    @classmethod
    def build(cls, texts: Sequence[str], encoder: str = DEFAULT_ENCODER, max_tokens: int = DEFAULT_MAX_TOKENS,
              cache_dir: str | os.PathLike | None = None, batch_size: int = 64) -> TokenStates:
        """Token states of items 1..N (`texts[i-1]`), cut to `max_tokens` tokens ([CLS]/[SEP]
        included). Cached under `<cache_dir>/utgrec/<states_cache_key>.npz`; a hit never loads the encoder."""
        from rucai.rec.embeddings import default_cache_dir

        if max_tokens < 3:
            raise UserError(f"max_tokens={max_tokens} is too small; use max_tokens>=3 (e.g. 128)")
        texts = list(texts)
        key = states_cache_key(encoder, max_tokens, texts)
        path = Path(cache_dir if cache_dir is not None else default_cache_dir()) / "utgrec" / f"{key}.npz"
        if path.is_file():
            try:
                ts = cls.load(path)
                if ts.num_items == len(texts):
                    log.info("utgrec token states: cache hit %s", path)
                    return ts
            except (OSError, ValueError, KeyError) as e:  # a corrupt cache file is rebuilt
                log.warning("utgrec token states: ignoring unreadable cache %s (%s)", path, e)
        tok, model = load_token_encoder(encoder)
        facts = vocab_facts(tok)
        wemb = model.get_input_embeddings().weight.detach().float().cpu().numpy()
        log.info("utgrec token states: encoding %d items with %s (max_tokens=%d)", len(texts), encoder, max_tokens)
        enc = tok(texts, truncation=True, max_length=max_tokens, add_special_tokens=True)
        ids = [list(x) for x in enc["input_ids"]]
        lengths = np.array([len(x) for x in ids], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        flat_ids = np.concatenate([np.asarray(x, dtype=np.int32) for x in ids]) if ids else np.zeros(0, np.int32)
        flat = np.zeros((int(offsets[-1]), wemb.shape[1]), dtype=np.float16)
        order = np.argsort(-lengths, kind="stable")  # similar lengths per batch: little padding
        with torch.inference_mode():
            for s in range(0, len(order), batch_size):
                idx = order[s: s + batch_size]
                t = int(lengths[idx].max())
                x = torch.full((len(idx), t), facts["pad_token_id"], dtype=torch.long)
                m = torch.zeros((len(idx), t), dtype=torch.long)
                for r, i in enumerate(idx):
                    x[r, : lengths[i]] = torch.as_tensor(ids[i])
                    m[r, : lengths[i]] = 1
                h = model(input_ids=x, attention_mask=m).last_hidden_state.float().cpu().numpy()
                for r, i in enumerate(idx):
                    flat[offsets[i]: offsets[i + 1]] = h[r, : lengths[i]]
        ts = cls(flat, flat_ids, offsets, wemb, facts, encoder, max_tokens)
        ts.save(path)
        return cls.load(path)  # the float16 round trip: a fresh build and a cache hit give equal states


# ------------------------------------------------------------------------------------------ masking

def whole_word_mask(ids: torch.Tensor, continuation: torch.Tensor, special_ids: Sequence[int], mask_token_id: int,
                    random_candidates: torch.Tensor, generator: torch.Generator, rate: float = 1.0,
                    max_predictions: int = MAX_PREDICTIONS) -> tuple[torch.Tensor, torch.Tensor]:
    """Whole-word masking of one id sequence [L] -> (masked input [L], labels [L], -100 = none).

    Words = a non-special token plus the "##" continuation pieces after it. Words are visited in a
    random order and selected while the covered tokens stay within round(L * rate) (>= 1, at most
    `max_predictions`), skipping a word that would overflow; rate 1.0 selects every word. Each
    selected token then independently becomes [MASK] (p 0.8), else a random candidate (p 0.5 of the
    rest, 10% overall), else stays (10%)."""
    ids = ids.long()
    special = torch.isin(ids, torch.as_tensor(list(special_ids), dtype=torch.long))
    real = ~special
    cont = continuation[ids.clamp(0, len(continuation) - 1)] & real
    prev_real = torch.cat([torch.zeros(1, dtype=torch.bool), real[:-1]])
    start = real & ~(cont & prev_real)  # a word starts at a real token that does not continue one
    word = torch.cumsum(start.long(), 0) - 1  # word index of each real token
    n_words = int(start.sum())
    sizes = torch.bincount(word[real], minlength=n_words) if n_words else torch.zeros(0, dtype=torch.long)
    budget = min(max_predictions, max(1, int(round(len(ids) * rate))))
    order = torch.randperm(n_words, generator=generator)
    if int(sizes.sum()) <= budget:  # every word fits (the authors' rate 1.0)
        chosen = torch.ones(n_words, dtype=torch.bool)
    else:
        chosen = torch.zeros(n_words, dtype=torch.bool)
        covered = 0
        for w, k in zip(order.tolist(), sizes[order].tolist(), strict=True):
            if covered >= budget:
                break
            if covered + k > budget:
                continue
            chosen[w] = True
            covered += k
    selected = real & chosen[word.clamp(min=0)] if n_words else torch.zeros_like(real)
    labels = torch.where(selected, ids, torch.full_like(ids, -100))
    u = torch.rand(len(ids), generator=generator)
    v = torch.rand(len(ids), generator=generator)
    to_mask = selected & (u < 0.8)
    to_random = selected & ~to_mask & (v < 0.5)
    rnd = random_candidates[torch.randint(len(random_candidates), (len(ids),), generator=generator)]
    out = ids.clone()
    out[to_mask] = int(mask_token_id)
    out[to_random] = rnd[to_random]
    return out, labels


# ------------------------------------------------------------------------------------ co-occurrence

def cooccurrence_neighbours(sequences: Sequence[Sequence[int]], num_items: int) -> list[list[int]]:
    """Sorted neighbour lists of items 0..N (row 0 unused): the items right before and after the item
    in each user's training part s[:-2] (UTGRec `get_co_occurring_items`); an item with none (never
    in a training part, or alone in one) is its own only neighbour."""
    nb: list[set[int]] = [set() for _ in range(num_items + 1)]
    for s in sequences:
        u = [int(i) for i in list(s)[:-2]]
        for a, b in zip(u[:-1], u[1:], strict=True):
            nb[a].add(b)
            nb[b].add(a)
    return [sorted(x) if x else [i] for i, x in enumerate(nb)]


def training_items(sequences: Sequence[Sequence[int]]) -> list[int]:
    """Items of the training parts s[:-2] (UTGRec `ItemMMDataset(mode="train")`), sorted."""
    from rucai.data.sequential import train_items

    return train_items([list(s) for s in sequences])


# ----------------------------------------------------------------------------------- dataset/collate

def draw_example(key: int | tuple[int, int], items: Sequence[int], neighbours: Sequence[Sequence[int]],
                 seed: int) -> tuple[int, int, torch.Generator]:
    """(item, its co-occurrence positive, the generator for its masks) of example `key` = index or
    (index, epoch): seeded by (seed, epoch, index), so any worker count or a resume draws the same."""
    idx, epoch = (key if isinstance(key, tuple) else (key, 0))
    item = items[int(idx)]
    g = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, int(epoch), int(idx)])
                                          .generate_state(1, dtype=np.uint64)[0] >> 1))
    nb = neighbours[item]
    return item, nb[int(torch.randint(len(nb), (1,), generator=g))], g


class UTGItemDataset(Dataset):
    """One example per item: the item, a co-occurrence positive, both items' token states and
    whole-word-masked decoder texts. `ds[k]` takes an index or an (index, epoch) pair (what
    `EpochShuffleSampler` yields): the positive and the masks are drawn from a generator seeded with
    (seed, epoch, index), so draws differ per epoch, are the same with any number of workers, and a
    resumed run redraws what an uninterrupted one would."""

    def __init__(self, states: TokenStates, sequences: Sequence[Sequence[int]], items: str | Sequence[int] = "train",
                 seed: int = 0, mlm_probability: float = 1.0):
        if isinstance(items, str):
            if items == "train":
                items = training_items(sequences)
            elif items == "all":
                items = list(range(1, states.num_items + 1))
            else:
                raise UserError(f"items={items!r}; use items=train (the authors') or items=all")
        self.items = [int(i) for i in items]
        if any(not 1 <= i <= states.num_items for i in self.items):
            raise UserError(f"item ids must lie in 1..{states.num_items} (the token states' items)")
        if not 0.0 < mlm_probability <= 1.0:
            raise UserError(f"mlm_probability={mlm_probability} must lie in (0, 1]; the authors use 1.0")
        self.states, self.seed, self.rate = states, int(seed), float(mlm_probability)
        self.neighbours = cooccurrence_neighbours(sequences, states.num_items)
        self.continuation = torch.from_numpy(states.continuation)
        self.candidates = states.random_candidates()

    def __len__(self) -> int:
        return len(self.items)

    def _text(self, item: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.from_numpy(self.states.input_ids(item))
        return whole_word_mask(ids, self.continuation, self.states.special_ids, self.states.mask_token_id,
                               self.candidates, g, self.rate)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        item, pos, g = draw_example(key, self.items, self.neighbours, self.seed)
        text, labels = self._text(item, g)
        ptext, plabels = self._text(pos, g)
        return {"item": item, "pos": pos,
                "states": torch.from_numpy(self.states.states(item).astype(np.float32)),
                "pos_states": torch.from_numpy(self.states.states(pos).astype(np.float32)),
                "text_input": text, "text_labels": labels, "pos_text_input": ptext, "pos_text_labels": plabels}


def _pad(rows: list[torch.Tensor], value: float | int) -> tuple[torch.Tensor, torch.Tensor]:
    t = max(len(r) for r in rows)
    out = torch.full((len(rows), t, *rows[0].shape[1:]), value, dtype=rows[0].dtype)
    mask = torch.zeros(len(rows), t, dtype=torch.bool)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
        mask[i, : len(r)] = True
    return out, mask


def collate_utg(batch: list[dict[str, Any]], pad_token_id: int = 0) -> dict[str, torch.Tensor]:
    """Right-pad to the batch's longest: `item` [B] long; `states`/`pos_states` [B,T,D] float32 with
    `state_mask`/`pos_state_mask` [B,T] bool (True = real token); `text_input`/`pos_text_input`
    [B,S] long (masked ids, padding = pad_token_id), `text_labels`/`pos_text_labels` [B,S] long
    (-100 = no label, padding included), `text_mask`/`pos_text_mask` [B,S] bool."""
    out: dict[str, torch.Tensor] = {"item": torch.tensor([b["item"] for b in batch], dtype=torch.long)}
    for p in ("", "pos_"):
        out[f"{p}states"], out[f"{p}state_mask"] = _pad([b[f"{p}states"] for b in batch], 0.0)
        out[f"{p}text_input"], out[f"{p}text_mask"] = _pad([b[f"{p}text_input"] for b in batch], pad_token_id)
        out[f"{p}text_labels"], _ = _pad([b[f"{p}text_labels"] for b in batch], -100)
    return {k: out[k] for k in BATCH_KEYS}


class EpochShuffleSampler(Sampler):
    """A seeded permutation per epoch (seed + epoch) yielding (index, epoch) pairs for
    `UTGItemDataset`; Lightning calls `set_epoch` each epoch (single-process; under DDP pass
    `use_distributed_sampler=False` and shard yourself)."""

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True):
        self.n, self.seed, self.shuffle, self.epoch = n, int(seed), shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        if self.shuffle:
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
        else:
            order = range(self.n)
        return iter([(i, self.epoch) for i in order])


# ------------------------------------------------------------------------------------- data module

def load_sequence_data(data: Any):
    """A SequenceData from: a SequenceData, a zero-argument callable returning one, a SeqRecDataModule
    (its `load()`), or a config mapping with `_target_` (e.g. conf/data/rec/ml100k.yaml) instantiated
    with Hydra."""
    from rucai.data.sequential import SequenceData

    if isinstance(data, SequenceData):
        return data
    if isinstance(data, Mapping):  # a dict or an OmegaConf DictConfig
        if "_target_" not in data:
            raise UserError("data config needs _target_ (e.g. rucai.data.recbole.RecBoleDataModule)")
        from hydra.utils import instantiate

        data = instantiate(data)
    if hasattr(data, "load") and callable(data.load):
        data = data.load()
    elif callable(data):
        data = data()
    if not isinstance(data, SequenceData):
        raise UserError(f"cannot read sequences from {type(data).__name__}; pass a rucai.data.* DataModule config")
    return data


class UTGTokenizerData(L.LightningDataModule):
    """Items, positives and masked texts for training the UTGRec tokenizer on one domain.

    `data`: see `load_sequence_data`. Positives come from the training parts s[:-2] only; `items`
    = "train" (the authors' `mode="train"`: items of those training parts) or "all" (1..N)."""

    def __init__(self, data: Any, batch_size: int = 64, max_tokens: int = DEFAULT_MAX_TOKENS,
                 encoder: str = DEFAULT_ENCODER, cache_dir: str | None = None, seed: int = 0,
                 fields: Sequence[str] | None = None, items: str = "train", mlm_probability: float = 1.0,
                 num_workers: int = 0, encode_batch_size: int = 64):
        super().__init__()
        if batch_size < 1:
            raise UserError(f"batch_size={batch_size}; use batch_size>=1")
        self.data_arg, self.batch_size, self.max_tokens = data, int(batch_size), int(max_tokens)
        self.encoder, self.cache_dir, self.seed = encoder, cache_dir, int(seed)
        self.fields = list(fields) if fields is not None else None
        self.items, self.rate, self.num_workers = items, float(mlm_probability), int(num_workers)
        self.encode_batch_size = int(encode_batch_size)
        self.data = self.states = self.dataset = None
        self.texts: list[str] = []

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is not None:
            return
        self.data = load_sequence_data(self.data_arg)
        self.texts = item_texts(self.data, self.fields)
        self.states = TokenStates.build(self.texts, self.encoder, self.max_tokens, self.cache_dir,
                                        self.encode_batch_size)
        self.dataset = UTGItemDataset(self.states, self.data.sequences, self.items, self.seed, self.rate)

    def _loader(self, shuffle: bool) -> DataLoader:
        from functools import partial

        self.setup()
        return ResumableLoader(self.dataset, batch_size=self.batch_size,
                               sampler=EpochShuffleSampler(len(self.dataset), self.seed, shuffle),
                               collate_fn=partial(collate_utg, pad_token_id=self.states.pad_token_id),
                               num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(False)


def build_item_states(data: Any, fields: Sequence[str] | None = None, encoder: str = DEFAULT_ENCODER,
                      max_tokens: int = DEFAULT_MAX_TOKENS, cache_dir: str | None = None,
                      batch_size: int = 64) -> tuple[Any, list[str], TokenStates]:
    """(SequenceData, texts of items 1..N, TokenStates) for code generation over every item."""
    sd = load_sequence_data(data)
    texts = item_texts(sd, fields)
    return sd, texts, TokenStates.build(texts, encoder, max_tokens, cache_dir, batch_size)

