"""Item tokenization: items -> code tuples (semantic IDs) for generative recommenders.

An item tokenizer is a component chosen by config (`item_tokenizer=rqvae`, `conf/item_tokenizer/`):
any callable class whose instance maps a `SequenceData` (item text, number of items) to
`{item_id: [c1, ..., cL]}`. The train task hands the codes to the model as `item_codes`; the data
layer knows nothing of tokenizers. RQ-VAE semantic IDs (`rucai.rec.semantic_ids.RQVAETokenizer`)
are the first; later papers (UTGRec's tree codebooks, CoCoRec's product-quantised codes) add theirs
as classes of their own subpackage and a config file.
"""

from __future__ import annotations

from typing import Any, Protocol


class ItemTokenizer(Protocol):
    def __call__(self, data: Any) -> dict[int, list[int]]: ...


def item_codes(conf: Any, data: Any) -> dict[int, list[int]]:
    """Instantiate the `item_tokenizer` config and tokenize `data`'s items."""
    from hydra.utils import instantiate

    tokenizer = instantiate(conf, _convert_="all")
    return tokenizer(data)


class CodesFile:
    """Codes read from a JSON file `{item_id: [c1, ..., cL]}` (`item_tokenizer=file
    item_tokenizer.path=...`), e.g. one of MTGRec's `tokenizers/tok_XX.json`, so a TIGER run uses
    exactly the IDs another run trained."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __call__(self, data: Any) -> dict[int, list[int]]:
        import json
        from pathlib import Path

        from rucai.errors import UserError

        p = Path(str(self.path)).expanduser()
        if not p.is_file():
            raise UserError(f"item_tokenizer.path={self.path} not found; give a JSON file of item codes "
                            f"(e.g. <mtgrec run>/tokenizers/tok_04.json)")
        try:
            codes = {int(k): [int(c) for c in v] for k, v in json.loads(p.read_text()).items()}
        except (ValueError, TypeError, AttributeError) as e:
            raise UserError(f"item_tokenizer.path={self.path} is not a JSON object of item id -> code list ({e})") from None
        missing = [i for i in range(1, data.num_items + 1) if i not in codes]
        if missing:
            raise UserError(f"item_tokenizer.path={self.path} lacks codes for {len(missing)} of the "
                            f"{data.num_items} items of {data.name} (e.g. {missing[:3]}): a file of another dataset?")
        return codes


class RandomCodes:
    """Uniformly random, unique code tuples (`item_tokenizer=random`): the no-semantics baseline of
    a tokenizer comparison. `sizes[l]` codes at level l; a tuple drawn twice is redrawn, so every
    item gets its own (needs prod(sizes) >= number of items); the same seed gives the same codes."""

    def __init__(self, sizes: list[int] | tuple[int, ...] = (256, 256, 256), seed: int = 0) -> None:
        self.sizes = [int(s) for s in sizes]
        self.seed = int(seed)

    def __call__(self, data: Any) -> dict[int, list[int]]:
        import math
        import random

        from rucai.errors import UserError

        n = data.num_items
        if not self.sizes or min(self.sizes) < 1 or math.prod(self.sizes) < n:
            raise UserError(f"item_tokenizer.sizes={self.sizes} cannot give {n} items unique codes; "
                            f"use more or larger levels")
        rng = random.Random(self.seed)
        seen: set[tuple[int, ...]] = set()
        out: dict[int, list[int]] = {}
        for i in range(1, n + 1):
            while (t := tuple(rng.randrange(s) for s in self.sizes)) in seen:
                pass
            seen.add(t)
            out[i] = list(t)
        return out
