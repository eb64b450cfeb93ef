"""UTGRec MLLM tokenizer path (rucai.utgrec.mllm) on a tiny random Qwen2-VL and an offline BPE tokenizer."""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("peft")

from rucai.errors import UserError  # noqa: E402
from rucai.utgrec import mllm  # noqa: E402

CHAT = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
        "{% else %}{% for c in m['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}"
        "{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
TEXTS = ["", "Red acoustic guitar. Strings of steel.", "Blue office chair with wheels.",
         "Stapler for the office desk, heavy duty.", "Guitar strings, steel, light gauge. Pack of ten.",
         "A desk lamp."]
SEQS = [[1, 4, 2, 3, 5, 1], [2, 3, 4, 1, 5], [3, 2, 5, 4, 2]]
CODE_DIM = 16


def tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    corpus = TEXTS[1:] * 5 + ["This is an image of an item. The item's information also includes",
                              "An item is missing its corresponding image. Compress the information into tokens, "
                              "representing content from coarse to fine granularity. user assistant"] * 5
    bpe.train_from_iterator(corpus, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  chat_template=CHAT)
    return tok


def tiny_qwen2vl(vocab: int):
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    torch.manual_seed(0)
    text = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                num_key_value_heads=1, max_position_embeddings=2048, bos_token_id=0, eos_token_id=2, pad_token_id=0,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6]},
                tie_word_embeddings=True)
    vision = dict(depth=1, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2, in_channels=3)
    cfg = Qwen2VLConfig(text_config=text, vision_config=vision, image_token_id=5, video_token_id=6,
                        vision_start_token_id=7, vision_end_token_id=8, tie_word_embeddings=True)
    return Qwen2VLForConditionalGeneration(cfg).float()


@pytest.fixture(scope="module")
def parts():
    tok = tiny_tokenizer()
    ids = mllm.add_code_tokens(tok, 3)
    llm = tiny_qwen2vl(len(tok) + 7)  # as Qwen2-VL-2B: config vocab larger than the tokenizer's
    expected_targets = sorted(f"model.language_model.layers.{i}.{m}" for i in range(2) for m in
                              ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                               "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"))
    assert mllm.lora_target_modules(llm) == expected_targets
    mllm.resize_for_tokenizer(llm, tok)
    return tok, ids, llm, expected_targets


def build(parts, **kw):
    import copy

    tok, ids, llm, _ = parts
    torch.manual_seed(1)
    args = dict(code_dim=CODE_DIM, adapter_hidden=32, root_codes=8, leaf_codes=12, warmup_steps=-1) | kw
    return mllm.MLLMUTGTokenizer(copy.deepcopy(llm), **args)


def batch_of(parts, items=(1, 2, 3, 4), seed=0, **kw):
    tok, ids, _, _ = parts
    ds = mllm.MLLMItemDataset(TEXTS, SEQS, tok, ids["code_token_ids"], items=list(items), seed=seed, **kw)
    return mllm.collate_mllm([ds[i] for i in range(len(ds))], tok.pad_token_id, 3), ds


def test_tokens_and_prompt(parts):
    tok, ids, llm, _ = parts
    assert ids["added"] == 4 and tok.mask_token == "<mask>" and tok.padding_side == "right"
    assert llm.get_input_embeddings().weight.shape[0] == len(tok)  # resized down to the tokenizer
    p = mllm.prompt_text(tok, TEXTS[2], 3, max_len=4)
    cut = tok.decode(tok.encode(TEXTS[2], add_special_tokens=False)[:4])
    assert p == ("<|im_start|>user\nAn item is missing its corresponding image. The item's information also "
                 f"includes: {cut}. Compress the information into 3 tokens, representing content from coarse to "
                 "fine granularity.<|im_end|>\n<|im_start|>assistant\n<CODE_0><CODE_1><CODE_2>")
    assert mllm.IMAGE_PROMPT.format(n=3).format("x").startswith("This is an image of an item. The item's "
                                                                 "information also includes: x. Compress the image")


def test_lora_lands_on_every_llm_linear_and_base_is_frozen(parts):
    from peft.tuners.lora import LoraLayer
    from peft.utils import ModulesToSaveWrapper

    m = build(parts)
    expected = parts[3]
    assert m.lora_targets == expected
    base = m.base_lm()
    lora = sorted(n for n, mod in base.named_modules() if isinstance(mod, LoraLayer))
    assert lora == expected  # no LoRA in the vision tower, none on lm_head
    wrapped = sorted(n for n, mod in base.named_modules() if isinstance(mod, ModulesToSaveWrapper))
    assert wrapped == ["lm_head", "model.language_model.embed_tokens"]
    lc = m.llm.peft_config["default"]
    assert (lc.r, lc.lora_alpha, lc.lora_dropout) == (8, 32, 0.1)
    for n, p in m.llm.named_parameters():
        trainable = "lora_" in n or "modules_to_save" in n
        assert p.requires_grad == trainable, n
    assert not any(p.requires_grad for p in base.model.visual.parameters())
    # the shared modules the decoder uses are the trainable copies
    assert m.lm_head() is base.lm_head and m.word_embeddings() is base.model.language_model.embed_tokens
    # decoder: one Qwen2-VL text layer, bidirectional (eager), no embeddings of its own, shared LM head
    assert len(m.lm_decoder.layers) == 1 and m.lm_decoder.embed_tokens is None
    assert m.lm_decoder.config.intermediate_size == 4 * 64
    assert not any(n.startswith("lm_decoder") and "lm_head" in n for n, _ in m.named_parameters())


def test_code_tokens_feed_the_mlp(parts):
    tok, ids, _, _ = parts
    m = build(parts).eval()
    b, _ = batch_of(parts)
    code = torch.tensor(ids["code_token_ids"])
    rows = torch.arange(4)[:, None]
    assert torch.equal(b["input_ids"][rows, b["code_token_indices"]], code.expand(4, 3))
    lens = b["attention_mask"].sum(1)
    assert len(set(lens.tolist())) > 1  # right padding with unequal lengths
    assert torch.equal(b["code_token_indices"][:, -1], lens - 1)
    seen = {}
    h = m.adapter_l2c.register_forward_hook(lambda mod, i, o: seen.update(x=i[0], y=o))
    out = m.encode(b)
    h.remove()
    with torch.no_grad():
        hid = m.base_lm().model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state
    assert torch.allclose(seen["x"], hid[rows, b["code_token_indices"]], atol=1e-5)
    assert seen["y"].shape == (4, 3, CODE_DIM) and torch.equal(out["h"], seen["y"])
    assert out["codes"].shape == (4, 3) and out["leaf_distances"].shape == (4, 12)


def test_qwen_masking_is_per_token_like_the_authors(parts):
    tok, ids, _, _ = parts
    b, ds = batch_of(parts, mlm_probability=1.0)
    dec = [ds.encoded(i)[1] for i in (1, 2, 3, 4)]
    for r, d in enumerate(dec):
        lab = b["text_labels"][r, : len(d)]
        assert torch.equal(lab, d)  # rate 1.0: every (non-special) token is a labelled "word"
        assert (b["text_labels"][r, len(d):] == -100).all()
    cont, special, cand = mllm.masking_vocab(tok, ids["code_token_ids"], "token")
    assert not cont.any()  # no Qwen BPE token starts with "##"
    assert set(ids["code_token_ids"]) <= set(special) and ids["mask_token_id"] in special
    assert not set(special) & set(cand.tolist()) and len(special) + len(cand) == len(tok)
    cont_sp, _, _ = mllm.masking_vocab(tok, ids["code_token_ids"], "space")
    pieces = tok.convert_ids_to_tokens(tok.encode(" steel strings"))
    assert [bool(cont_sp[tok.convert_tokens_to_ids(p)]) for p in pieces] == [not p.startswith("Ġ") for p in pieces]


def test_losses_finite_formula_and_one_step(parts):
    m = build(parts, warmup_steps=-1).train()
    b, _ = batch_of(parts)
    out = m.losses(b)
    assert set(out) == {"loss", "text", "text_pos", "image", "image_pos", "vq", "cl", "warmup"}
    assert all(math.isfinite(float(v)) for v in out.values())
    assert float(out["image"]) == 0.0 and float(out["vq"]) > 0 and float(out["cl"]) > 0
    hand = (out["text"] + 5 * out["image"] + 0.03 * (out["text_pos"] + 5 * out["image_pos"])
            + 200 * out["vq"] + 0.01 * out["cl"])
    assert torch.allclose(out["loss"], hand)
    # the text loss is a CE over the shared LM head: near log(V) at random init
    assert abs(float(out["text"]) - math.log(len(parts[0]))) < 1.5

    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    opt.zero_grad()
    out["loss"].backward()
    opt.step()
    now = dict(m.named_parameters())
    changed = {n for n in before if not torch.equal(before[n], now[n].detach())}
    lora_b = [n for n in before if "lora_B" in n]
    assert lora_b and all(n in changed for n in lora_b)
    frozen = [n for n, p in now.items() if not p.requires_grad]
    assert frozen and not (changed & set(frozen))
    assert any("modules_to_save" in n and "lm_head" in n for n in changed)
    assert any(n.startswith("lm_decoder.") for n in changed) and any(n.startswith("adapter_l2c.") for n in changed)


def test_warmup_batch_and_images_rejected(parts):
    m = build(parts, warmup_steps=5)
    b, _ = batch_of(parts, items=(2, 5))
    out = m.losses(b)
    assert float(out["warmup"]) == 1.0 and float(out["vq"]) == 0.0 and math.isfinite(float(out["loss"]))
    with pytest.raises(UserError, match="no image branch"):
        m.losses(b | {"pixel_values": torch.zeros(4, 1176)})
    with pytest.raises(UserError, match="no image branch"):
        m.encode(b | {"input_images": torch.zeros(2, 3, 256, 256)})
    g = build(parts, warmup_steps=-1, gradient_checkpointing=True).train()
    assert g.base_lm().is_gradient_checkpointing
    g.losses(b)["loss"].backward()
    assert all(p.grad is not None for n, p in g.named_parameters() if "lora_B" in n)


def test_decoder_is_bidirectional(parts):
    m = build(parts).eval()
    b, _ = batch_of(parts, items=(1, 2))
    q = torch.randn(2, 3, CODE_DIM)
    seen = []
    h = m.lm_decoder.register_forward_hook(lambda mod, i, o: seen.append(o.last_hidden_state.detach()))
    x = b["text_input"].clone()
    last = int(b["text_mask"][0].sum()) - 1
    with torch.no_grad():
        m.text_loss(q, x, b["text_labels"], b["text_mask"])
        x[0, last] = (x[0, last] + 1) % 200 + 10
        m.text_loss(q, x, b["text_labels"], b["text_mask"])
    h.remove()
    assert not torch.allclose(seen[0][0, 0], seen[1][0, 0])  # the first code position sees the last token
    assert torch.allclose(seen[0][1], seen[1][1])  # other rows untouched


def test_start_adaptation_freezes_E(parts):
    m = build(parts).train()
    m.start_adaptation()
    qz = m.quantizer
    assert not qz.root.code_embs.requires_grad and not qz.leaf.code_embs.requires_grad
    assert qz.root.proj.weight.requires_grad and qz.leaf.proj.weight.requires_grad
    e0 = [qz.root.code_embs.detach().clone(), qz.leaf.code_embs.detach().clone()]
    w0 = qz.leaf.proj.weight.detach().clone()
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    b, _ = batch_of(parts)
    m.losses(b)["loss"].backward()
    opt.step()
    assert torch.equal(e0[0], qz.root.code_embs) and torch.equal(e0[1], qz.leaf.code_embs)
    assert not torch.equal(w0, qz.leaf.proj.weight)


def test_lightning_module_switch(parts):
    import copy

    from rucai.utgrec.module import UTGTokenizerModule

    mod = UTGTokenizerModule(backbone="mllm", llm=copy.deepcopy(parts[2]), vq_warmup_steps=0, code_dim=CODE_DIM,
                             adapter_hidden=32, root_codes=8, leaf_codes=12)
    assert isinstance(mod.tok, mllm.MLLMUTGTokenizer) and mod.tok.quantizer.warmup_steps == 0
    with pytest.raises(ValueError, match="backbone"):
        UTGTokenizerModule(backbone="vision")
