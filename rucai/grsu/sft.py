"""Simulator instruction tuning (the authors' `train_simulator.sh`: full fine-tune, lr 1e-6 cosine to
0.1x after 1,000 warm-up steps, 1 epoch, max length 3,072, the loss on the assistant turn only), as
the project's chat SFT module (`rucai.llm.sft.ChatSFT`) run by the project's trainer (hardware
profiles incl. DeepSpeed ZeRO-3, resume from `last.ckpt`). LoRA (peft) as an option.

Data: scoring examples from the simulator-training half of the dialogs: for each label of a turn,
the scoring prompt with the labelled item -> "Yes" and with `negatives_per_positive` random
catalogue items (never a label of the turn) -> "No". The paper also trains on critique examples
synthesised by a 70B model; those were not released and are not built here.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from rucai.grsu import prompts as P
from rucai.grsu.simulator import chat


def scoring_examples(turns: Sequence[Any], catalogue: Mapping[int, str], negatives: int, seed: int,
                     max_examples: int | None = None) -> list[tuple[list[dict[str, str]], str]]:
    """[(chat messages, "Yes" | "No")]: per label one positive and `negatives` negatives (random
    catalogue items that are no label of the turn); `max_examples` keeps whole groups (a positive with
    its negatives), so the Yes share stays 1 / (1 + negatives)."""
    rng = random.Random(seed)
    ids = list(catalogue)
    groups = []
    for t in turns:
        labels = set(t.labels)
        for label in t.labels:
            g = [(chat(P.SYSTEM_SIM, P.SIM_SCORE.format(dialogue=t.dialogue, item=catalogue[label])), "Yes")]
            for _ in range(negatives):
                neg = rng.choice(ids)
                while neg in labels:
                    neg = rng.choice(ids)
                g.append((chat(P.SYSTEM_SIM, P.SIM_SCORE.format(dialogue=t.dialogue, item=catalogue[neg])), "No"))
            groups.append(g)
    rng.shuffle(groups)
    out = []
    for g in groups:
        if max_examples and len(out) + len(g) > max_examples:
            break
        out += g
    rng.shuffle(out)
    return out
