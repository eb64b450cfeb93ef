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
