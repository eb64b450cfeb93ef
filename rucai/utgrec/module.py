"""The UTGRec tokenizer as a Lightning module: one training step = `TextUTGTokenizer.losses` (or
`MLLMUTGTokenizer.losses` with `backbone="mllm"`), AdamW
with a linear warm-up over `warmup_ratio` of the steps then linear decay (the Hugging Face Trainer
the authors use), the quantiser's warm-up counter in the checkpoint (it survives a resume)."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from rucai.utgrec.tokenizer import TextUTGTokenizer

TOKENIZER_KEYS = ("head_layers", "head_heads", "code_dim", "root_codes", "leaf_codes", "beta", "tau",
                  "train_word_embeddings", "text_pos_weight", "vq_weight", "cl_weight")


class UTGTokenizerModule(L.LightningModule):
    def __init__(self, word_embeddings: torch.Tensor | None = None, state_dim: int | None = None, lr: float = 3e-4,
                 weight_decay: float = 0.01, warmup_ratio: float = 0.03, vq_warmup_steps: int = 300,
                 backbone: str = "text", llm: Any = None, **tokenizer: Any):
        super().__init__()
        self.save_hyperparameters(ignore=["word_embeddings", "llm"])
        if backbone == "mllm":  # Qwen2-VL + LoRA (rucai.utgrec.mllm); `llm` is the built model
            from rucai.utgrec.mllm import MLLMUTGTokenizer

            if llm is None:
                raise ValueError("backbone=mllm needs llm= (a Qwen2VLForConditionalGeneration)")
            self.tok = MLLMUTGTokenizer(llm, warmup_steps=vq_warmup_steps, **tokenizer)
        elif backbone == "text":
            if word_embeddings is None or state_dim is None:
                raise ValueError("backbone=text needs word_embeddings and state_dim")
            self.tok = TextUTGTokenizer(torch.as_tensor(word_embeddings), state_dim=state_dim,
                                        warmup_steps=vq_warmup_steps, **tokenizer)
        else:
            raise ValueError(f"backbone={backbone!r}; use text or mllm")
        self.lr, self.weight_decay, self.warmup_ratio = lr, weight_decay, warmup_ratio

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out = self.tok.losses(batch)
        n = len(batch["item"])
        for k, v in out.items():
            self.log(f"train/{k}", v, on_step=False, on_epoch=True, prog_bar=k == "loss", batch_size=n)
        return out["loss"]

    def configure_optimizers(self):
        from rucai.runtime.hardware import adam

        params = [p for p in self.parameters() if p.requires_grad]
        opt = adam(self, params, lr=self.lr, weight_decay=self.weight_decay, decoupled=True)
        total = max(int(self.trainer.estimated_stepping_batches), 1) if self._trainer is not None else 1
        warm = int(total * self.warmup_ratio)

        def lr_at(step: int) -> float:  # transformers' get_linear_schedule_with_warmup
            if step < warm:
                return step / max(warm, 1)
            return max(0.0, (total - step) / max(total - warm, 1))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
