"""Demonstration texts for EASY-EP scoring: any JSONL (or JSON list) of records and a template.

`JsonlTexts(path, template="{problem}\n\n{solution}")` reads records and formats each with
`template` (Python `str.format` over the record's fields). Point it at a math_eval run's
`samples.jsonl` with `template: "{prompt}{response}"` to score on the model's own solutions, as the
authors do (prompt + the model's full response, one prefill pass).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rucai.errors import UserError


class JsonlTexts:
    def __init__(self, path: str, template: str = "{text}", name: str | None = None, limit: int | None = None,
                 filter_field: str | None = None, filter_value: Any = None):
        self.path = Path(path)
        self.template = template
        self.name = name or self.path.stem
        self.limit = limit
        self.filter_field, self.filter_value = filter_field, filter_value

    def records(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            raise UserError(f"{self.path} not found; set data.path (or paths.data_dir / RUCAI_DATA_DIR)")
        text = self.path.read_text(encoding="utf-8")
        if text.lstrip().startswith("["):
            rows = json.loads(text)
        elif text.lstrip().startswith("{") and self.path.suffix == ".json":
            obj = json.loads(text)
            rows = list(obj.values()) if all(isinstance(v, dict) for v in obj.values()) else [obj]
        else:
            rows = [json.loads(x) for x in text.splitlines() if x.strip()]
        if self.filter_field:
            rows = [r for r in rows if r.get(self.filter_field) == self.filter_value]
        return rows

    def texts(self) -> list[str]:
        out = []
        for r in self.records():
            try:
                out.append(self.template.format(**r))
            except KeyError as e:
                raise UserError(f"{self.path}: template field {e} missing; record fields are {sorted(r)[:10]}") from e
        if not out:
            raise UserError(f"{self.path} yields no demonstration texts")
        return out[: self.limit] if self.limit else out
