"""UTGRec's image branch: the diffusion loss (rucai.utgrec.diffusion) by hand, the KL-16 encoder
(rucai.utgrec.vae), and the MLLM tokenizer with images on a tiny random Qwen2-VL."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rucai.errors import UserError
from rucai.utgrec import diffusion, vae


def test_cosine_schedule_and_posterior_by_hand():
    betas = diffusion.cosine_betas(1000)
    abar = lambda s: math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    assert betas[0] == pytest.approx(1 - abar(0.001) / abar(0.0))
    assert betas[500] == pytest.approx(1 - abar(0.501) / abar(0.5)) and betas.max() <= 0.999
    d = diffusion.GaussianDiffusion(betas)
    ac = np.cumprod(1 - betas)
    x0, noise = torch.tensor([[0.5, -1.0]]), torch.tensor([[1.0, 2.0]])
    t = torch.tensor([10])
    xt = d.q_sample(x0, t, noise)
    assert torch.allclose(xt, torch.tensor(math.sqrt(ac[10])) * x0 + math.sqrt(1 - ac[10]) * noise)
    # the posterior mean of q(x_{t-1} | x_t, x_0), written out
    mean, logvar = d.q_posterior(x0, xt, t)
    c1 = betas[10] * math.sqrt(ac[9]) / (1 - ac[10])
    c2 = (1 - ac[9]) * math.sqrt(1 - betas[10]) / (1 - ac[10])
    assert torch.allclose(mean, c1 * x0 + c2 * xt, atol=1e-6)
    assert torch.allclose(logvar, torch.full_like(x0, math.log(betas[10] * (1 - ac[9]) / (1 - ac[10]))))
    assert float(diffusion.normal_kl(mean, logvar, mean, logvar).abs().max()) == 0.0


def test_an_oracle_network_has_zero_loss_after_t0():
    """A network that returns the true noise and v = -1 (the posterior's own variance) has MSE 0 and
    KL 0: the loss is exactly the denoising error plus the variance bound."""
    d = diffusion.GaussianDiffusion(diffusion.cosine_betas(100))
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(6, 4, generator=g) * 2 - 1
    noise = torch.randn(6, 4, generator=g)
    t = torch.tensor([1, 5, 20, 50, 80, 99])

    class Oracle(torch.nn.Module):
        def forward(self, xt, tt, c):
            return torch.cat([noise, -torch.ones_like(noise)], dim=1)

    out = d.training_losses(Oracle(), x0, t, torch.zeros(6, 3), noise=noise)
    assert float(out["mse"].abs().max()) < 1e-10 and float(out["vb"].abs().max()) < 1e-4

    class Wrong(torch.nn.Module):
        def forward(self, xt, tt, c):
            return torch.cat([noise + 0.5, -torch.ones_like(noise)], dim=1)

    bad = d.training_losses(Wrong(), x0, t, torch.zeros(6, 3), noise=noise)
    assert torch.allclose(bad["mse"], torch.full((6,), 0.25))
    # the bound trains the variance only: the mean's error enters through the detached eps, so vb>0
    assert bool((bad["vb"] > 0).all())


def test_diffloss_masks_and_a_batch_without_images_is_zero_not_nan():
    torch.manual_seed(0)
    dl = diffusion.DiffLoss(target_channels=4, cond_channels=8, width=16, depth=2, steps=50, batch_mul=2)
    target, z = torch.randn(2, 5, 4), torch.randn(2, 5, 8, requires_grad=True)
    none = dl(target, z, torch.zeros(2, 5))
    assert float(none) == 0.0
    none.backward()  # still on the graph
    mask = torch.zeros(2, 5)
    mask[0, :3] = 1
    torch.manual_seed(1)
    a = dl(target, z, mask)
    other = target.clone()
    other[1] += 10.0  # rows outside the mask do not count
    torch.manual_seed(1)
    b = dl(other, z, mask)
    assert math.isfinite(float(a)) and torch.allclose(a, b)
    # the final layer starts at zero (adaLN-zero): eps = 0, so the MSE part is the noise's power
    x = torch.randn(3, 4)
    assert float(dl.net(x, torch.tensor([1, 2, 3]), torch.randn(3, 8)).abs().max()) == 0.0


def test_kl16_encoder_shapes_loading_and_errors(tmp_path):
    torch.manual_seed(0)
    enc = vae.load_image_encoder(None, embed_dim=16, ch=32, ch_mult=(1, 1, 2, 2, 4))
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    z = enc(x, generator=torch.Generator().manual_seed(0))
    assert z.shape == (2, 16, 4, 4) and enc.stride == 16 and not any(p.requires_grad for p in enc.parameters())
    assert vae.patchify(z).shape == (2, 16, 16) and torch.equal(vae.patchify(z)[0, 1], z[0, :, 0, 1])
    names = set(enc.state_dict())
    assert {"encoder.conv_in.weight", "encoder.down.0.block.0.norm1.weight", "encoder.down.0.downsample.conv.weight",
            "encoder.down.4.attn.1.q.weight", "encoder.mid.attn_1.proj_out.weight", "encoder.conv_out.weight",
            "quant_conv.weight"} <= names  # LDM / MAR names; attention only at resolution 16 (64 / 2^2)
    assert not any(n.startswith("encoder.down.3.attn") for n in names)
    # a checkpoint in MAR's layout ({"model": ...}, decoder weights included) loads by path
    other = vae.KLImageEncoder(16, ch=32)
    sd = {k: v + 1.0 for k, v in other.state_dict().items()} | {"decoder.conv_in.weight": torch.zeros(1)}
    torch.save({"model": sd}, tmp_path / "kl16.ckpt")
    loaded = vae.load_image_encoder(tmp_path / "kl16.ckpt", 16, ch=32)
    assert torch.equal(loaded.quant_conv.weight, sd["quant_conv.weight"])
    with pytest.raises(UserError, match="VAE checkpoint not found"):
        vae.load_image_encoder(tmp_path / "missing.ckpt")
    torch.save({"model": {"x": torch.zeros(1)}}, tmp_path / "bad.ckpt")
    with pytest.raises(UserError, match="not a KL-16 VAE checkpoint"):
        vae.load_image_encoder(tmp_path / "bad.ckpt", 16, ch=32)


def test_center_crop_and_vae_transform():
    from PIL import Image

    arr = np.zeros((300, 600, 3), dtype=np.uint8)
    arr[:, :300] = 255  # left half white
    im = Image.fromarray(arr)
    crop = vae.center_crop_arr(im, 256)
    assert crop.size == (256, 256)
    t = vae.image_tensor(im, 256)
    assert t.shape == (3, 256, 256) and float(t.min()) >= -1 and float(t.max()) <= 1
    # the crop is centred: its left half is white, its right half black; a flip swaps them
    assert float(t[:, :, :100].mean()) > 0.9 and float(t[:, :, -100:].mean()) < -0.9
    assert torch.equal(vae.image_tensor(im, 256, flip=True), t.flip(-1))


def test_main_image_url_follows_the_authors_choice():
    from rucai.data.download import main_image_url

    imgs = [{"variant": "PT01", "large": "a", "thumb": "t"}, {"variant": "MAIN", "thumb": "mt", "hi_res": "mh"}]
    assert main_image_url(imgs) == "mh"  # MAIN entry, no "large": its last URL
    assert main_image_url(imgs[:1]) == "a" and main_image_url([]) is None


# -- the MLLM tokenizer with images ---------------------------------------------------------

pytest.importorskip("peft")

CHAT = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
        "{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<|vision_start|><|image_pad|>"
        "<|vision_end|>{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}"
        "{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def tiny_vl(image_dir):
    """(tokenizer with Qwen2-VL's vision tokens and template, code token ids, tiny random Qwen2-VL,
    PIL image processor (56x56 px: 4 merged patches), item image files, TEXTS, SEQS); item 3's image
    file is absent. Also used by experiments/utgrec/gpu_check.py."""
    from pathlib import Path

    from PIL import Image
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from rucai.utgrec import mllm
    from tests.test_utgrec_mllm import SEQS, TEXTS, tiny_qwen2vl, tiny_tokenizer

    tok = tiny_tokenizer()
    tok.add_tokens(["<|vision_start|>", "<|vision_end|>", "<|image_pad|>"], special_tokens=True)
    tok.chat_template = CHAT
    ids = mllm.add_code_tokens(tok, 3)
    llm = tiny_qwen2vl(len(tok))
    cfg = llm.config
    cfg.image_token_id = tok.convert_tokens_to_ids("<|image_pad|>")
    cfg.vision_start_token_id = tok.convert_tokens_to_ids("<|vision_start|>")
    cfg.vision_end_token_id = tok.convert_tokens_to_ids("<|vision_end|>")
    proc = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=56 * 56)
    d = Path(image_dir)
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    images = [None]
    for i in range(1, len(TEXTS)):
        if i == 3:
            images.append(str(d / "absent.jpg"))  # an item whose image is missing
            continue
        Image.fromarray(rng.integers(0, 255, (40 + 8 * i, 48, 3), dtype=np.uint8)).save(d / f"{i}.jpg")
        images.append(str(d / f"{i}.jpg"))
    return tok, ids, llm, proc, images, TEXTS, SEQS


TINY_IMAGE_MODEL = dict(code_dim=16, adapter_hidden=32, root_codes=8, leaf_codes=12, image_branch=True,
                        vae_path="random", vae_channels=32, vae_ch_mult=(1, 2), diffloss_width=32, diffloss_depth=2)


@pytest.fixture(scope="module")
def vl(tmp_path_factory):
    return tiny_vl(tmp_path_factory.mktemp("images"))


def _model(vl, **kw):
    import copy

    from rucai.utgrec import mllm

    tok, ids, llm, *_ = vl
    torch.manual_seed(1)
    args = TINY_IMAGE_MODEL | {"warmup_steps": -1} | kw
    return mllm.MLLMUTGTokenizer(copy.deepcopy(llm), **args)


def _batch(vl, items, **kw):
    from rucai.utgrec import mllm

    tok, ids, llm, proc, images, texts, seqs = vl
    ds = mllm.MLLMItemDataset(texts, seqs, tok, ids["code_token_ids"], items=list(items), seed=0, images=images,
                              image_processor=proc, image_size=32, **kw)
    return mllm.collate_mllm([ds[i] for i in range(len(ds))], tok.pad_token_id, 3), ds


def test_dataset_puts_the_image_in_the_prompt_and_masks_every_latent_token(vl):
    tok, ids, *_ = vl
    b, ds = _batch(vl, items=(1, 3))
    pad = tok.convert_tokens_to_ids("<|image_pad|>")
    assert int((b["input_ids"][0] == pad).sum()) == int(b["image_grid_thw"][0].prod()) // 4  # merge 2x2
    assert int((b["input_ids"][1] == pad).sum()) == 0  # item 3: no image file, the no-image prompt
    assert b["input_images"].shape == (2, 3, 32, 32) and float(b["input_images"][1].abs().max()) == 0.0
    assert b["input_image_masks"][0].sum() == 256 and b["input_image_masks"][1].sum() == 0
    assert b["pixel_values"].shape[0] == int(b["image_grid_thw"].prod(-1).sum())
    assert b["code_token_indices"].tolist()[0] == [int(b["attention_mask"][0].sum()) - 3 + k for k in range(3)]
    assert torch.equal(b["input_ids"][0, b["code_token_indices"][0]], torch.tensor(ids["code_token_ids"]))
    half, _ = _batch(vl, items=(1,), mlm_probability=0.5)
    assert half["input_image_masks"][0].sum() == 128  # ceil(256 x 0.5), seeded
    again, _ = _batch(vl, items=(1,), mlm_probability=0.5)
    assert torch.equal(half["input_image_masks"], again["input_image_masks"])


def test_image_branch_losses_gradients_and_the_imageless_batch(vl):
    m = _model(vl).train()
    seen = []
    hook = m.base_lm().model.visual.register_forward_hook(lambda mod, i, o: seen.append(1))
    b, _ = _batch(vl, items=(1, 2, 4, 3))
    out = m.losses(b)
    hook.remove()
    assert seen  # the images went through the vision tower
    assert all(math.isfinite(float(v)) for v in out.values())
    assert float(out["image"]) > 0 and float(out["image_pos"]) > 0
    hand = (out["text"] + 5 * out["image"] + 0.03 * (out["text_pos"] + 5 * out["image_pos"])
            + 200 * out["vq"] + 0.01 * out["cl"])
    assert torch.allclose(out["loss"], hand)
    vae0 = {n: p.detach().clone() for n, p in m.vae.named_parameters()}
    before = {n: p.detach().clone() for n, p in m.named_parameters() if p.requires_grad}
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    out["loss"].backward()
    opt.step()
    # the diffusion head's output and modulation layers start at zero (MAR's adaLN-zero): the output
    # layer moves at step 1, the modulation at step 2, and the condition (so the image decoder) at step 3
    for _ in range(2):
        opt.zero_grad()
        m.losses(b)["loss"].backward()
        opt.step()
    changed = {n for n, p in m.named_parameters() if n in before and not torch.equal(before[n], p.detach())}
    for prefix in ("vision_decoder.", "diffloss.net.", "vision_mask_token", "lm_decoder."):
        assert any(n.startswith(prefix) for n in changed), prefix
    # every latent token is masked (rate 1.0, the authors'): the projection of the visible ones is unused
    assert not any(n.startswith("vision_proj.") for n in changed)
    assert all(torch.equal(vae0[n], p) for n, p in m.vae.named_parameters())  # the VAE stays frozen
    # a batch in which no item has an image: the image terms are 0 and finite (the authors: NaN)
    nb, _ = _batch(vl, items=(3, 3))
    nb["pos_input_image_masks"] = torch.zeros_like(nb["pos_input_image_masks"])
    out = m.losses(nb)
    assert float(out["image"]) == 0.0 and float(out["image_pos"]) == 0.0 and math.isfinite(float(out["loss"]))
    out["loss"].backward()


def test_image_branch_needs_a_vae_path_and_refuses_mismatched_crops(vl):
    with pytest.raises(UserError, match="vae_path"):
        _model(vl, vae_path=None)
    m = _model(vl, vae_ch_mult=(1, 2, 2))  # stride 4: 8 x 8 tokens for a 32 px crop, masks of 256
    b, _ = _batch(vl, items=(1, 2))
    with pytest.raises(UserError, match="latent tokens per image"):
        m.losses(b)


def test_image_urls_of_the_split_items(tmp_path):
    import gzip
    import json

    from rucai.data.download import DownloadError, amazon23_image_urls

    cat = "Office_Products"
    rows = "user_id,parent_asin,rating,timestamp,history\nu1,B2,5,2,B1\n"
    for split in ("train", "valid", "test"):
        with gzip.open(tmp_path / f"{cat}.{split}.csv.gz", "wt") as f:
            f.write(rows)
    metas = [{"parent_asin": "B1", "images": [{"variant": "MAIN", "large": "http://x/b1.jpg"}]},
             {"parent_asin": "B2", "images": []},
             {"parent_asin": "B9", "images": [{"variant": "MAIN", "large": "http://x/b9.jpg"}]}]  # not in the splits
    with gzip.open(tmp_path / f"meta_{cat}.jsonl.gz", "wt") as f:
        f.write("\n".join(json.dumps(m) for m in metas))
    assert amazon23_image_urls(tmp_path, "office") == {"B1": "http://x/b1.jpg"}
    with pytest.raises(DownloadError, match="python -m rucai.data.download amazon23"):
        amazon23_image_urls(tmp_path / "nowhere", cat)


def test_item_image_files_and_the_text_path_refuses_images(tmp_path):
    from omegaconf import OmegaConf

    from rucai.data.sequential import SequenceData
    from rucai.utgrec import mllm
    from rucai.utgrec.tasks import _tokenizer_kwargs

    data = SequenceData(name="d", sequences=[[1, 2]], num_items=2, item_text={1: {"parent_asin": "B1"}, 2: {}})
    assert mllm.item_image_files(data, tmp_path) == [None, tmp_path / "B1.jpg", None]
    with pytest.raises(UserError, match="needs method.tokenizer.image_dir"):
        mllm.item_image_files(data, None)
    with pytest.raises(UserError, match="amazon23-images"):
        mllm.item_image_files(data, tmp_path / "absent")
    from rucai.utgrec.config import UTGRecSettings

    m = OmegaConf.structured(UTGRecSettings)
    m.tokenizer.image_branch = True
    with pytest.raises(UserError, match="needs backbone=mllm"):
        _tokenizer_kwargs(m)
    m.tokenizer.backbone, m.tokenizer.vae_path = "mllm", "/x/kl16.ckpt"
    kw = _tokenizer_kwargs(m)
    assert kw["image_branch"] is True and kw["vae_path"] == "/x/kl16.ckpt" and kw["diffusion_batch_mul"] == 4
