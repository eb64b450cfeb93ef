"""UTGRec's MLLM tokenizer path on a GPU: a tiny random-weight Qwen2-VL-shaped model with LoRA, the
tree SimVQ and the 1-layer decoder, a few Lightning steps through DeepSpeed ZeRO-2 (the authors'
zero_cfg/zero2.json setting), then codes for every item. < 2 minutes on one GPU.

    python experiments/utgrec/gpu_check.py                      # CUDA, hardware=deepspeed_stage_2 settings
    python experiments/utgrec/gpu_check.py --strategy auto      # plain single-device Lightning (CPU too)
    python experiments/utgrec/gpu_check.py --image-branch       # with images: vision tower, VAE, diffusion loss

Prints ONE JSON line: strategy, steps, losses (finite), LoRA weights changed, frozen base unchanged,
codes shape. The model and tokenizer are the unit tests' tiny ones (tests/test_utgrec_mllm.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main() -> int:
    import lightning as L
    import torch

    from rucai.utgrec import mllm
    from rucai.utgrec.module import UTGTokenizerModule
    from tests.test_utgrec_mllm import SEQS, TEXTS, tiny_qwen2vl, tiny_tokenizer

    p = argparse.ArgumentParser()
    p.add_argument("--strategy", default="deepspeed_stage_2")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--image-branch", action="store_true", help="items with images (tests/test_utgrec_image.py)")
    a = p.parse_args()
    gpu = torch.cuda.is_available()
    extra: dict = {}
    if a.image_branch:
        import tempfile

        from tests.test_utgrec_image import TINY_IMAGE_MODEL, tiny_vl

        tok, ids, llm, proc, images, _, _ = tiny_vl(tempfile.mkdtemp(prefix="utgrec-images-"))
        kw = {k: v for k, v in TINY_IMAGE_MODEL.items() if k not in ("code_dim", "root_codes", "leaf_codes")}
        extra = {"images": images, "image_processor": proc, "image_size": 32}
    else:
        tok = tiny_tokenizer()
        ids = mllm.add_code_tokens(tok, 3)
        llm = tiny_qwen2vl(len(tok) + 7)
        mllm.resize_for_tokenizer(llm, tok)
        kw = {}
    module = UTGTokenizerModule(backbone="mllm", llm=llm, code_dim=16, root_codes=8, leaf_codes=12,
                                vq_warmup_steps=2, lr=1e-3, **kw)
    module.log = lambda *x, **y: None
    lora0 = {n: t.detach().float().clone() for n, t in module.named_parameters() if "lora_B" in n}
    base0 = {n: t.detach().float().clone() for n, t in module.named_parameters() if not t.requires_grad}
    ds = mllm.MLLMItemDataset(TEXTS, SEQS, tok, ids["code_token_ids"], items="all", seed=0, **extra)
    collate = lambda b: mllm.collate_mllm(b, tok.pad_token_id, 3)  # noqa: E731
    loader = torch.utils.data.DataLoader(ds, batch_size=4, shuffle=True, collate_fn=collate)
    losses: list[float] = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    strategy = a.strategy if gpu or a.strategy == "auto" else "auto"
    trainer = L.Trainer(accelerator="gpu" if gpu else "cpu", devices=1, strategy=strategy,
                        precision="bf16-mixed" if gpu else "32-true", max_steps=a.steps, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, callbacks=[Record()])
    trainer.fit(module, loader)
    dev = next(module.parameters()).device
    module.eval()
    enc = [module.tok.encode({k: v.to(dev) if torch.is_tensor(v) else v for k, v in b.items()})["codes"] for b in
           torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=collate)]
    after = dict(module.named_parameters())
    out = {"check": "utgrec_mllm_tiny" + ("_images" if a.image_branch else ""), "strategy": strategy, "device": str(dev),
           "gpu": torch.cuda.get_device_name(0) if gpu else None, "steps": len(losses),
           "loss_first_last": [round(losses[0], 4), round(losses[-1], 4)] if losses else None,
           "finite": bool(losses) and all(x == x and abs(x) != float("inf") for x in losses),
           "lora_changed": all(not torch.equal(lora0[n], after[n].detach().float().cpu()) for n in lora0),
           "frozen_unchanged": all(torch.equal(base0[n], after[n].detach().float().cpu()) for n in base0),
           "codes_shape": list(torch.cat(enc).shape)}
    print(json.dumps(out))
    return 0 if out["finite"] and out["lora_changed"] and out["frozen_unchanged"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
