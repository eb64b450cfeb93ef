"""ReDial evaluation turns for GRSU, read from the zero-shot-CRS copy of ReDial.

Files (``/work/shared/data/redial``, from github.com/AaronHeee/LLMs-as-Zero-Shot-Conversational-RecSys
``data/redial``): ``test.jsonl`` (one record per SYSTEM utterance: ``context`` list of earlier
utterances, ``resp``, ``rec`` entity ids of the movies in ``resp``, ``prev_entity`` entity ids
linked in the context, ``dialog_id``, ``turn_id``, ``is_user``, ``input``), ``item_ids.json``
(the movie entity ids) and ``entity2id.json`` (DBpedia URI -> entity id).

The authors (RUCAIBox/GRSU ``src/task/redial.py``) read their own ``test_data_processed.jsonl``
(raw ReDial messages with ``role``); they evaluate every system message with >= 1 catalogue item
and a non-empty history; labels are its catalogue items. ``only_new=True`` (their yaml setting)
SKIPS THE WHOLE TURN when any of its labels was mentioned (by either side) in an earlier message;
it does not drop single labels. Here "mentioned earlier" is ``prev_entity`` intersected with the
catalogue (on the test file every earlier ``rec`` is contained in the later ``prev_entity``).

Speaker roles: ``input`` labels the context ``User, System, User, ...`` from the first real
utterance. That is wrong whenever the system spoke first: ``context[0]`` is always ``""`` (a
placeholder, dropped here), utterances strictly alternate (consecutive same-speaker messages are
merged; checked on every consecutive record pair of the test file), and the utterance right
before a system response is the user's. So roles are assigned BACKWARDS: last = ``User``, then
alternating. E.g. dialog 20041 starts with the system's "Hello!" (the authors' file says
``role: system``) but ``input`` calls it ``User``; ``input`` is wrong for every record with an
even number of real context utterances.

Catalogue titles: from the DBpedia URI (``Water_(1985_film)`` -> ``Water (1985)``; ``X_(film)`` ->
``X``; percent-escapes decoded), overridden by the ReDial spelling ``Title (year)`` found in a
record's ``entity_name`` when its name without the year equals the URI name (case-insensitive) of
an id in that record's ``entity``/``rec``; so every test label gets ReDial's title with year.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

from rucai.errors import UserError

__all__ = ["Turn", "DOWNLOAD", "load_redial", "load_catalogue", "records_to_turns", "history_of", "split_dialogs"]

DOWNLOAD = "python -m rucai.data.download {name} --out {dir}"
_FILES = ("test.jsonl", "item_ids.json", "entity2id.json")
_URI = re.compile(r"^<?http://dbpedia\.org/resource/(.*?)>?$")
_FILM_YEAR = re.compile(r"^(.*) \((\d{4})(?: [^()]*)? film\)$")
_FILM = re.compile(r"^(.*) \([^()]*film\)$")
_YEAR = re.compile(r"^(.*) \((\d{4})\)$")


@dataclass
class Turn:
    """One evaluation instance: the system turn to recommend at, with its gold items."""

    dialog_id: str
    turn_id: int
    history: list[tuple[str, str]]  # (role in {"User", "System"}, text), oldest first
    labels: list[int]  # catalogue ids in the gold response, deduplicated in order
    response: str = ""
    mentioned: list[int] = field(default_factory=list)  # catalogue ids mentioned earlier

    @property
    def dialogue(self) -> str:
        """The history as prompts show it: one "User: ..." / "System: ..." line per utterance."""
        return "\n".join(f"{role}: {text}" for role, text in self.history)

    @property
    def key(self) -> str:
        """The turn's cache key (simulator scores are cached per (turn, item))."""
        return f"{self.dialog_id}/{self.turn_id}"


def _check_dir(dir: str | Path) -> Path:
    d = Path(dir)
    missing = [f for f in _FILES if not (d / f).is_file()]
    if missing:
        name = "inspired" if "inspired" in d.name.lower() else "redial"
        raise UserError(f"{name} data not found at {d} (missing {', '.join(missing)}): "
                        f"run `{DOWNLOAD.format(name=name, dir=d)}`")
    return d


def _read_records(d: Path) -> list[dict]:
    return [json.loads(line) for line in (d / "test.jsonl").read_text().splitlines() if line.strip()]


def history_of(context: Sequence[str]) -> list[tuple[str, str]]:
    """(role, text) of a system turn's ``context``: the leading ``""`` placeholder dropped, roles
    assigned backwards from the last utterance (the user's), alternating."""
    utts = list(context[1:]) if context and context[0] == "" else list(context)
    n = len(utts)
    return [("User" if (n - 1 - i) % 2 == 0 else "System", text) for i, text in enumerate(utts)]


def _uri_title(uri: str) -> str:
    m = _URI.match(uri)
    name = unquote(m.group(1) if m else uri).replace("_", " ").strip()
    if m := _FILM_YEAR.match(name):
        return f"{m.group(1)} ({m.group(2)})"
    if m := _FILM.match(name):
        return m.group(1)
    return name


def load_catalogue(dir: str | Path, records: Sequence[dict] | None = None) -> dict[int, str]:
    """Catalogue id -> title (with year where known); ``records`` default to ``dir/test.jsonl``."""
    d = _check_dir(dir)
    items = json.loads((d / "item_ids.json").read_text())
    entity2id = json.loads((d / "entity2id.json").read_text())
    id2uri = {v: k for k, v in entity2id.items()}
    titles = {int(i): _uri_title(id2uri.get(i, str(i))) for i in items}
    base = {i: t.lower() for i, t in titles.items()}
    if records is None:
        records = _read_records(d)
    for rec in records:
        ids = [i for i in list(rec.get("rec", [])) + list(rec.get("entity", [])) if i in titles]
        for name in rec.get("entity_name", []):
            m = _YEAR.match(name.strip())
            if m is None:
                continue
            for i in ids:
                if base[i] == m.group(1).strip().lower():
                    titles[i] = name.strip()
    return titles


def records_to_turns(records: Sequence[dict], item_ids: set[int], only_new: bool = False) -> list[Turn]:
    """Evaluation turns of zero-shot-CRS ReDial records (see the module docstring)."""
    turns = []
    for rec in records:
        if rec.get("is_user", 0) != 0:
            continue
        labels = list(dict.fromkeys(i for i in rec.get("rec", []) if i in item_ids))
        history = history_of(rec.get("context", []))
        if not labels or not history:
            continue
        mentioned = [i for i in dict.fromkeys(rec.get("prev_entity", [])) if i in item_ids]
        if only_new and set(labels) & set(mentioned):
            continue
        turns.append(Turn(str(rec["dialog_id"]), int(rec["turn_id"]), history, labels, rec.get("resp", ""), mentioned))
    return turns


def load_redial(dir: str | Path, only_new: bool = False) -> list[Turn]:
    """Evaluation turns of ``dir/test.jsonl`` (UserError naming the download command if absent)."""
    d = _check_dir(dir)
    records = _read_records(d)
    item_ids = {int(i) for i in json.loads((d / "item_ids.json").read_text())}
    return records_to_turns(records, item_ids, only_new=only_new)


def split_dialogs(turns: Sequence[Turn], seed: int = 0, frac: float = 0.5) -> tuple[list[Turn], list[Turn]]:
    """(simulator_train, evaluation) split BY DIALOG: the sorted distinct dialog ids are shuffled
    with ``random.Random(seed)`` and the first ``round(frac * n_dialogs)`` go to simulator_train.
    Deterministic for a seed (independent of turn order and PYTHONHASHSEED); turn order is kept."""
    if not 0.0 <= frac <= 1.0:
        raise UserError(f"split fraction must be in [0, 1], got {frac}: set frac between 0 and 1")
    ids = sorted({t.dialog_id for t in turns})
    random.Random(seed).shuffle(ids)
    train_ids = set(ids[: round(frac * len(ids))])
    train = [t for t in turns if t.dialog_id in train_ids]
    evaluation = [t for t in turns if t.dialog_id not in train_ids]
    return train, evaluation
