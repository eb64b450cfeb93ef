"""CoCoRec tasks: `cocorec.train` (the core train task with the item codes and text vectors of
`method=cocorec`), `cocorec.evaluate` (test a checkpoint) and `cocorec.codes` (build and describe
the item codes only). The codes are cached (`rucai.cocorec.codes`), so every seed and ablation of
one dataset quantises once."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from rucai.errors import UserError
from rucai.registry import task


def item_features(cfg: DictConfig):
    """`method` -> a callable data -> model arguments (item_codes, text_vectors, code_vocab, num_codes)."""
    from rucai.cocorec.codes import ItemFeatures

    m = cfg.get("method")
    if m is None or "codes_per_view" not in m:
        raise UserError("the cocorec tasks need method=cocorec (use an experiment=cocorec/... overlay)")
    s = OmegaConf.to_container(m, resolve=True)
    feats = ItemFeatures(views=list(s["views"]), encoder=s["encoder"], code_pca_dim=s["code_pca_dim"],
                         text_dim=int(s["text_dim"]), quantizer=s["quantizer"], codes_per_view=s["codes_per_view"],
                         bits=s["bits"], seed=s["seed"], cache_dir=s["cache_dir"], faiss_threads=s["faiss_threads"],
                         batch_size=s["encode_batch_size"], device=s["encode_device"])
    return feats.model_kwargs


@task("cocorec.train")
def train(cfg: DictConfig) -> dict[str, Any]:
    from rucai.tasks import fit_and_test

    return fit_and_test(cfg, item_features(cfg))


@task("cocorec.evaluate")
def evaluate(cfg: DictConfig) -> dict[str, Any]:
    from rucai.tasks import evaluate_checkpoint

    return evaluate_checkpoint(cfg, item_features(cfg))


@task("cocorec.codes")
def codes(cfg: DictConfig) -> dict[str, Any]:
    """Build (or load) the item codes and report how they are used."""
    from hydra.utils import instantiate

    dm = instantiate(cfg.data, _convert_="all")
    dm.setup("fit")
    out = item_features(cfg)(dm.data)
    c = out["item_codes"][1:]
    tuples = {tuple(r) for r in c.tolist()}
    return {"items": len(c), "codes_per_item": int(c.shape[1]), "code_vocab": int(out["code_vocab"]),
            "distinct_tuples": len(tuples), "items_sharing_a_tuple": len(c) - len(tuples),
            "mean_codes_used_per_level": float(sum(len(set(col)) for col in c.T.tolist()) / c.shape[1])}
