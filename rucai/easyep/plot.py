"""Heatmap of expert scores (layers x experts) with the kept experts marked."""

from __future__ import annotations

from pathlib import Path


def score_heatmap(scores, layers: list[int], keep: dict[int, list[int]], path: str | Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from rucai.easyep.selection import normalise_rows

    s = normalise_rows(scores).numpy()
    L, E = s.shape
    fig, ax = plt.subplots(figsize=(min(24, 2 + E * 0.12), min(16, 1.5 + L * 0.25)))
    im = ax.imshow(s, aspect="auto", interpolation="nearest", cmap="viridis")
    ys, xs = [], []
    for r, li in enumerate(layers):
        for e in keep.get(li, []):
            ys.append(r)
            xs.append(e)
    ax.scatter(xs, ys, s=6, c="red", marker="o", linewidths=0, label="kept")
    ax.set_xlabel("expert")
    ax.set_ylabel("MoE layer")
    ax.set_yticks(np.arange(L)[:: max(1, L // 16)])
    ax.set_yticklabels([str(layers[i]) for i in range(0, L, max(1, L // 16))])
    ax.set_title(title or "EASY-EP scores (row-normalised); red: kept")
    fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    from rucai.utils.io import save_figure

    return save_figure(fig, path)
