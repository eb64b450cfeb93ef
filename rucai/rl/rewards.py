"""Named reward registries (open-r1's reward registry): each paper keeps one `RewardRegistry` of
its outcome rewards and picks them by name from config; an unknown name is one line listing the
valid ones. A reward returns a dict of its components plus `total` (R1-Searcher) or a float
(STREAM-Rec's per-component rewards, weighted by config)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class RewardRegistry(dict[str, Callable[..., Any]]):
    """name -> reward function; `register(name)` is the decorator, `get(name)` the strict lookup."""

    def __init__(self, what: str = "reward"):
        super().__init__()
        self.what = what

    def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
            if name in self and self[name] is not fn:
                raise ValueError(f"{self.what} {name!r} registered twice")
            self[name] = fn
            return fn

        return deco

    def lookup(self, name: str) -> Callable[..., Any]:
        from rucai.errors import UserError

        if name not in self:
            raise UserError(f"unknown {self.what}={name!r}; valid: {', '.join(sorted(self))}")
        return self[name]
