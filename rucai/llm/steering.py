"""Representation steering for Hugging Face causal LMs (GLoRE; reusable): read the hidden state at
the output of decoder layer L, and add vectors there during generation with the norm preserved.

- `decoder_layers(model)`: the decoder blocks of Llama/Qwen/Mistral/SmolLM2-style models
  (`model.model.layers`), GPT-2 style (`transformer.h`), or a PEFT-wrapped one.
- `layer_states(model, batches, layer, positions)`: the layer-L output at given positions of
  unpadded sequences (one forward each; exact, no padding effects).
- `Steerer(model, layer, strength)`: a context manager. Inside it, every forward through the model
  edits the layer-L output: at prefill (more than one new position), the row's first real token
  gets its `first` vector and its last token its `last` vector; with `decode=True`, every cached
  decoding step (one new position) gets both (the GLoRE authors' behaviour). An edit is
  h <- (h + strength v) * ||h|| / ||h + strength v||. Vectors are per prompt, looked up by the
  row's unpadded prompt token ids, so batching, reordering and n samples per prompt all work.
- `save_vectors` / `load_vectors`: safetensors.

Works with `device_map`-sharded models: the vectors follow the layer's device and dtype.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch


def decoder_layers(model: Any) -> Sequence[torch.nn.Module]:
    m = model
    for _ in range(4):  # unwrap PeftModel / LoraModel / ForCausalLM
        if hasattr(m, "layers") and isinstance(m.layers, torch.nn.ModuleList):
            return m.layers
        if hasattr(m, "transformer") and hasattr(m.transformer, "h"):
            return m.transformer.h
        m = getattr(m, "model", None) or getattr(m, "base_model", None)
        if m is None:
            break
    raise ValueError(f"cannot find the decoder layers of {type(model).__name__}")


def _hidden(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def _replace(output: Any, h: torch.Tensor) -> Any:
    return (h, *output[1:]) if isinstance(output, tuple) else h


def edit(h: torch.Tensor, v: torch.Tensor, strength: float) -> torch.Tensor:
    """(h + strength v) rescaled to ||h|| (last dimension); fp32 arithmetic, h's dtype back."""
    hf = h.float()
    new = hf + strength * v.float()
    scale = hf.norm(dim=-1, keepdim=True) / new.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    return (new * scale).to(h.dtype)


@torch.no_grad()
def layer_states(model: Any, sequences: Iterable[Sequence[int]], layer: int | Sequence[int],
                 positions: Sequence[int] | int = -1) -> torch.Tensor:
    """The output of decoder block `layer` (0-based) for each token-id sequence at its position (one
    per sequence, or one for all; negative = from the end): [N, D], or [len(layer), N, D] when `layer`
    is a list (one forward serves every layer). One unpadded forward per sequence: exact."""
    many = not isinstance(layer, int)
    wanted = [int(x) for x in layer] if many else [int(layer)]
    blocks = decoder_layers(model)
    seqs = [list(s) for s in sequences]
    pos = [positions] * len(seqs) if isinstance(positions, int) else list(positions)
    if len(pos) != len(seqs):
        raise ValueError(f"{len(pos)} positions for {len(seqs)} sequences")
    grabbed: dict[int, torch.Tensor] = {}

    def grab(i: int) -> Any:
        return lambda mod, inp, out: grabbed.__setitem__(i, _hidden(out)[0].detach())

    handles = [blocks[i].register_forward_hook(grab(i)) for i in wanted]
    out: list[torch.Tensor] = []
    try:
        dev = next(model.parameters()).device
        for s, p in zip(seqs, pos, strict=True):
            grabbed.clear()
            model(input_ids=torch.tensor([s], device=dev), use_cache=False)
            out.append(torch.stack([grabbed[i][p].float().cpu() for i in wanted]))
    finally:
        for h in handles:
            h.remove()
    if not out:
        return torch.zeros((len(wanted), 0, 0) if many else (0, 0))
    states = torch.stack(out, dim=1)  # [L, N, D]
    return states if many else states[0]


class Steerer:
    """See the module docstring. `vectors`: prompt token ids (tuple) -> {"first": [D] | None,
    "last": [D] | None}; rows may be left-padded (the attention mask tells the real tokens)."""

    def __init__(self, model: Any, layer: int, strength: float = 0.1, decode: bool = True):
        self.model, self.layer, self.strength, self.decode = model, int(layer), float(strength), bool(decode)
        self.vectors: dict[tuple[int, ...], dict[str, torch.Tensor | None]] = {}
        self._rows: list[dict[str, torch.Tensor | None] | None] = []
        self._firsts: list[int] = []
        self._handles: list[Any] = []
        self.misses = 0  # prefill rows whose prompt had no vectors set (left unedited)

    def set(self, prompt_ids: Sequence[int], first: torch.Tensor | None = None, last: torch.Tensor | None = None) -> None:
        self.vectors[tuple(int(t) for t in prompt_ids)] = {"first": first, "last": last}

    # -- hooks ------------------------------------------------------------------------------------
    def _pre(self, module: Any, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None or ids.shape[1] <= 1:
            return  # a decoding step: the rows keep their prefill order
        mask = kwargs.get("attention_mask")
        self._rows, self._firsts = [], []
        for r in range(ids.shape[0]):
            row = ids[r]
            if mask is not None:
                real = mask[r, : ids.shape[1]].bool()
                first = int(real.float().argmax()) if bool(real.any()) else 0
            else:
                first = 0
            key = tuple(int(t) for t in row[first:].tolist())
            self._rows.append(self.vectors.get(key))
            self.misses += key not in self.vectors
            self._firsts.append(first)

    def _post(self, module: Any, inputs: Any, output: Any) -> Any:
        h = _hidden(output)
        if not self._rows or h.shape[0] != len(self._rows):
            return output
        h = h.clone()
        prefill = h.shape[1] > 1
        for r, vec in enumerate(self._rows):
            if vec is None:
                continue
            for name, pos in (("first", self._firsts[r]), ("last", h.shape[1] - 1)):
                v = vec.get(name)
                if v is None:
                    continue
                if prefill:
                    h[r, pos] = edit(h[r, pos], v.to(h.device), self.strength)
                elif self.decode:
                    h[r, -1] = edit(h[r, -1], v.to(h.device), self.strength)
        return _replace(output, h)

    def __enter__(self) -> Steerer:
        block = decoder_layers(self.model)[self.layer]
        self._handles = [self.model.register_forward_pre_hook(self._pre, with_kwargs=True),
                         block.register_forward_hook(self._post)]
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles, self._rows = [], []


def save_vectors(path: str | Path, vectors: Mapping[str, torch.Tensor], meta: Mapping[str, str] | None = None) -> Path:
    """safetensors file, written to a temporary name and renamed."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().float().contiguous().cpu() for k, v in vectors.items()}, str(tmp),
              metadata={k: str(v) for k, v in (meta or {}).items()})
    tmp.replace(path)
    return path


def load_vectors(path: str | Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))
