"""Task registry: the composed config's `task` names an entry function.

Core tasks live in `rucai.tasks`; each paper subpackage may add a `tasks.py` whose functions are
decorated with `@task("paper.name")`. Discovery imports those modules, so they must keep heavy
imports (torch, transformers, vllm) inside the functions.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Callable
from typing import Any

from rucai.errors import UserError

_TASKS: dict[str, Callable[[Any], Any]] = {}
_DISCOVERED = False


def task(name: str) -> Callable[[Callable], Callable]:
    """Register `fn(cfg) -> metrics dict` under `name`."""

    def deco(fn: Callable) -> Callable:
        if name in _TASKS and _TASKS[name] is not fn:
            raise ValueError(f"task {name!r} registered twice ({_TASKS[name].__module__}, {fn.__module__})")
        _TASKS[name] = fn
        return fn

    return deco


def discover() -> dict[str, Callable]:
    """Import `rucai.tasks` and every `rucai.<subpackage>.tasks` module once."""
    global _DISCOVERED
    if not _DISCOVERED:
        import rucai

        importlib.import_module("rucai.tasks")
        for mod in pkgutil.iter_modules(rucai.__path__):
            if mod.ispkg and importlib.util.find_spec(f"rucai.{mod.name}.tasks") is not None:
                importlib.import_module(f"rucai.{mod.name}.tasks")
        _DISCOVERED = True
    return dict(_TASKS)


def get_task(name: str) -> Callable[[Any], Any]:
    tasks = discover()
    if name not in tasks:
        close = difflib.get_close_matches(name, list(tasks), n=3, cutoff=0.3) or sorted(tasks)
        raise UserError(f"unknown task={name!r}; closest valid names: {', '.join(close)}")
    return tasks[name]
