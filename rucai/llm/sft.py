"""Chat supervised fine-tuning as a Lightning module (shared by GRSU's simulator tuning and RV-Syn's
SFT): examples encoded with the loss on the assistant turn only, padded batches, AdamW with linear
warm-up then cosine decay to `min_lr_ratio`, LoRA (peft) as an option. Run by the project's
trainer, so every hardware profile (DeepSpeed ZeRO-3 included) and `last.ckpt` resume apply."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch


def encode_example(tokenizer: Any, messages: list[dict[str, str]], answer: str, max_length: int) -> dict[str, list[int]]:
    """input_ids of the chat with the assistant's answer, labels -100 everywhere but the answer's
    tokens (the assistant turn, its end-of-turn token included); the prompt is cut from the left
    when the whole is longer than `max_length`."""
    prompt = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": answer}], tokenize=True)
    prompt, full = list(_ids(prompt)), list(_ids(full))
    if full[: len(prompt)] != prompt:
        raise ValueError("the chat template renders the prompt differently with an answer; cannot mask the prompt")
    answer_ids = full[len(prompt):]
    keep = max_length - len(answer_ids)
    if keep < 1:
        raise ValueError(f"max_length={max_length} leaves no room for the prompt")
    prompt = prompt[-keep:]
    return {"input_ids": prompt + answer_ids, "labels": [-100] * len(prompt) + answer_ids}


def _ids(x: Any) -> list[int]:
    return x["input_ids"] if isinstance(x, Mapping) else x


def collate(rows: list[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    att = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[i, :n], labels[i, :n], att[i, :n] = torch.tensor(r["input_ids"]), torch.tensor(r["labels"]), 1
    return {"input_ids": ids, "labels": labels, "attention_mask": att}


def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """lr multiplier: linear warm-up from 0, then cosine from 1 to `min_ratio` at `total`."""
    if step < warmup:
        return step / max(warmup, 1)
    progress = min(1.0, (step - warmup) / max(total - warmup, 1))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class ChatSFT(L.LightningModule):
    def __init__(self, model: Any, lr: float, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.1,
                 lora: bool = False, lora_r: int = 8):
        super().__init__()
        if lora:
            from peft import LoraConfig, get_peft_model

            model = get_peft_model(model, LoraConfig(r=int(lora_r), lora_alpha=2 * int(lora_r), lora_dropout=0.05,
                                                     target_modules="all-linear", task_type="CAUSAL_LM"))
        self.model, self.lora = model, bool(lora)
        self.lr, self.warmup, self.total, self.min_ratio = float(lr), int(warmup_steps), int(total_steps), float(min_lr_ratio)

    def on_fit_start(self) -> None:
        self.model.train()  # from_pretrained returns the model in eval mode

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.model(**batch).loss
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(batch["input_ids"]))
        return loss

    def configure_optimizers(self):
        opt = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad], lr=self.lr, weight_decay=0.0)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: warmup_cosine(s, self.warmup, self.total, self.min_ratio))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def merged(self) -> Any:
        """The plain HF model to save (LoRA merged into the weights)."""
        return self.model.merge_and_unload() if self.lora else self.model
