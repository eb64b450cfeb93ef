"""Parse a CRS response into titles and match them to catalogue items (RUCAIBox/GRSU).

Follows ``RecModel._item_extraction`` (``src/infer/actor/rec_model/rec_model.py``) and
``BaseTask.clean_prediction`` (``src/task/base_task.py``):

* parsing: the prompt asks for lines ``[index]. **[item name] (year)**``; the authors keep every
  line holding a ``**...**`` span and take the first bold span of that line (the ``[i].`` prefix is
  NOT checked); a response is valid only when exactly ``k`` titles come out (k = 10 in
  ``script/infer/*.yaml``), otherwise it is resampled.
* matching: a title equal to a catalogue title is kept; otherwise RapidFuzz
  ``process.extractOne(title, catalogue, scorer=fuzz.QRatio, processor=utils.default_process)``.
  A title whose match was already used in this list is re-matched to the best UNUSED catalogue
  title (the authors call ``extractOne`` on ``item_set - used``; here ``process.extract`` with
  ``limit=len(used)+1``, whose results must contain an unused title, and the first unused is
  taken: the same choice up to ties). The authors' per-task cache of raw-title -> match is an
  optimisation and is not kept.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

__all__ = ["BOLD", "parse_recommendations", "match_titles"]

BOLD = re.compile(r"\*\*(.*?)\*\*")


def parse_recommendations(text: str, k: int = 10) -> list[str] | None:
    """Titles of a response in the ``[i]. **Title (year)**`` format, or None unless exactly ``k``."""
    titles = []
    for line in text.split("\n"):
        m = BOLD.search(line)
        if m is not None:
            titles.append(m.group(1).strip())
    return titles if len(titles) == k else None


def match_titles(titles: Sequence[str], catalogue_titles: Mapping[int, str] | Sequence[str]) -> list[int]:
    """Catalogue ids (keys of a mapping, or indices of a sequence) of ``titles``, all distinct
    (ValueError when there are more titles than catalogue items)."""
    from rapidfuzz import fuzz, process, utils

    choices: dict[int, str] = (
        dict(catalogue_titles) if isinstance(catalogue_titles, Mapping) else dict(enumerate(catalogue_titles))
    )
    if not choices:
        raise ValueError("empty catalogue")
    exact: dict[str, int] = {}
    for key, title in choices.items():
        exact.setdefault(title, key)
    used: set[int] = set()
    out: list[int] = []
    for title in titles:
        key = exact.get(title)
        if key is None:
            key = process.extractOne(title, choices, scorer=fuzz.QRatio, processor=utils.default_process)[2]
        if key in used:
            if len(used) >= len(choices):
                raise ValueError(f"{len(titles)} titles but only {len(choices)} catalogue items")
            hits = process.extract(
                title, choices, scorer=fuzz.QRatio, processor=utils.default_process, limit=len(used) + 1
            )
            key = next(h[2] for h in hits if h[2] not in used)
        used.add(key)
        out.append(key)
    return out
