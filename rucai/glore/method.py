"""GLoRE's method (the authors' code, txy77/GLoRE, with its bugs fixed; experiments/glore/README.md):

- One prompt layout everywhere: chat [user: INSTRUCTION + " " + problem] with the generation prompt
  (an open assistant turn); a demonstration appends its chain of thought as the assistant's text.
  (The authors build generation prompts as [user, assistant: ""], a closed assistant turn, and put
  the problem before the instruction in the memory.)
- Style vector: per demonstration problem, the layer-L state at the last token of
  [prompt + long CoT] minus the same with the short CoT; v_style = their mean.
- Domain memory: per domain demonstration, key = the layer-L state at the prompt's last token,
  value = the state at the last token of [prompt + short CoT]; a test query is its prompt's state at
  the SAME position as the keys (the authors take keys at len-2 and queries at len-1); v_domain =
  the mean value of the 5 keys nearest by cosine.
- Injection (`rucai.llm.steering.Steerer`): v_style at the first position, v_domain at the last,
  strength 0.1, norm preserved; during decoding both on every generated token (a switch).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch

INSTRUCTION = "Answer the following question step by step and put the final answer in \\boxed{}:"

# regexes, matched case-insensitively from a word boundary
REFLECTION_MARKERS = (r"wait\b", r"let me (?:re-?)?check", r"verif(?:y|ied|ying)\b", r"alternatively\b",
                      r"double[- ]check", r"let me re(?:consider|think|examine|visit)")


def prompt_messages(problem: str, instruction: str = INSTRUCTION, system_prompt: str | None = None
                    ) -> list[dict[str, str]]:
    """The chat prompt: [system (when given), user: instruction + " " + problem]."""
    msgs = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return msgs + [{"role": "user", "content": f"{instruction} {problem}"}]


def prompt_ids(tokenizer: Any, problem: str, answer: str | None = None, instruction: str = INSTRUCTION,
               system_prompt: str | None = None) -> list[int]:
    """Token ids of the prompt with an open assistant turn (the generation prompt), as the hf
    backend encodes it for generation, followed by `answer` as the assistant's text when given (not
    closed: the state at its last token is read). A demonstration's ids therefore extend its
    prompt's ids, so a memory key (the prompt's last token) sits where a test query is read."""
    text = tokenizer.apply_chat_template(prompt_messages(problem, instruction, system_prompt), tokenize=False,
                                         add_generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if answer:
        ids = ids + tokenizer(answer, add_special_tokens=False)["input_ids"]
    return ids


def truncate_cot(tokenizer: Any, cot: str, max_tokens: int) -> str:
    """The first `max_tokens` tokens of a chain of thought (long R1 traces exceed small contexts):
    the state is read at the truncation point."""
    ids = tokenizer(cot, add_special_tokens=False)["input_ids"]
    return cot if len(ids) <= max_tokens else tokenizer.decode(ids[:max_tokens])


def style_vector(h_long: torch.Tensor, h_short: torch.Tensor) -> torch.Tensor:
    """mean over demonstrations of (h_long - h_short): [N, D] x 2 -> [D]."""
    if h_long.shape != h_short.shape or h_long.ndim != 2 or len(h_long) == 0:
        raise ValueError(f"need two [N, D] state sets, got {tuple(h_long.shape)} and {tuple(h_short.shape)}")
    return (h_long.float() - h_short.float()).mean(0)


def domain_vectors(keys: torch.Tensor, values: torch.Tensor, queries: torch.Tensor, k: int = 5) -> torch.Tensor:
    """[Q, D]: for each query, the mean value of its `k` nearest keys by cosine (ties: lower index)."""
    if len(keys) != len(values) or len(keys) == 0:
        raise ValueError("the domain memory needs as many values as keys, at least one")
    k = min(int(k), len(keys))
    sim = torch.nn.functional.normalize(queries.float(), dim=-1) @ torch.nn.functional.normalize(keys.float(), dim=-1).T
    idx = torch.sort(sim, dim=1, descending=True, stable=True).indices[:, :k]
    return values.float()[idx].mean(1)


def random_like(v: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A random direction with the norm of `v` (the control condition)."""
    g = torch.Generator().manual_seed(int(seed))
    r = torch.randn(v.shape, generator=g)
    return r * (v.float().norm() / r.norm())


def reflection_count(text: str, markers: Sequence[str] = REFLECTION_MARKERS) -> int:
    """Occurrences of the reflection markers (`REFLECTION_MARKERS`, regexes from a word boundary)."""
    low = text.lower()
    return sum(len(re.findall(r"\b" + m, low)) for m in markers)


def reflection_rate(text: str, num_tokens: int, markers: Sequence[str] = REFLECTION_MARKERS) -> float:
    """Reflection markers per 100 generated tokens (0 for an empty response)."""
    return 100.0 * reflection_count(text, markers) / num_tokens if num_tokens > 0 else 0.0


def probe_accuracy(x: torch.Tensor, y: torch.Tensor, groups: Sequence[int], l2: float = 1.0, steps: int = 300) -> float:
    """Leave-one-group-out accuracy of an L2-regularised logistic regression on standardised features
    (the paper's analysis: long vs short CoT states, grouped by problem so a problem's two states are
    never split between train and test). Full-batch L-BFGS; deterministic."""
    groups_t = torch.as_tensor(list(groups))
    correct = 0
    for g in torch.unique(groups_t).tolist():
        test = groups_t == g
        tr_x, tr_y = x[~test].double(), y[~test].double()
        mu, sd = tr_x.mean(0), tr_x.std(0).clamp(min=1e-6)
        w = _fit_logistic(torch.cat([(tr_x - mu) / sd, torch.ones(len(tr_x), 1, dtype=torch.float64)], 1), tr_y, l2, steps)
        te = torch.cat([(x[test].double() - mu) / sd, torch.ones(int(test.sum()), 1, dtype=torch.float64)], 1)
        correct += int(((te @ w > 0).double() == y[test].double()).sum())
    return correct / len(y)


def _fit_logistic(xs: torch.Tensor, ys: torch.Tensor, l2: float, steps: int) -> torch.Tensor:
    w = torch.zeros(xs.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(xs @ w, ys) + l2 * (w[:-1] ** 2).sum() / len(xs)
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach()


def project_2d(x: torch.Tensor) -> torch.Tensor:
    """[N, D] -> [N, 2]: the first two principal components of the centred states."""
    xc = x.double() - x.double().mean(0)
    _, _, v = torch.linalg.svd(xc, full_matrices=False)
    return (xc @ v[:2].T).float()


def plot_projection(x: torch.Tensor, y: torch.Tensor, path: Any, title: str) -> Any:
    """Scatter of the 2-D projection, long (y=1) vs short (y=0) chains of thought; atomic write."""
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    z = project_2d(x)
    fig, ax = plt.subplots(figsize=(4.6, 4))
    for label, name, color in ((1, "long CoT (R1)", "#C44E52"), (0, "short CoT (own)", "#4C72B0")):
        sel = y == label
        ax.scatter(z[sel, 0], z[sel, 1], s=18, c=color, label=name, alpha=0.8)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    from rucai.utils.io import save_figure

    return save_figure(fig, path)
