"""VQGAN: names and shapes of the original checkpoints, the original on-disk format, and the generator.

Nothing is downloaded and no output is faked: real architectures with random weights are saved in taming's
format (yaml + Lightning-style ckpt) and read back through the real loader. Loop tests use a tiny model.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image

from dreamcanvas import weights
from dreamcanvas.errors import CorruptWeightsError, DreamcanvasError
from dreamcanvas.generators import create_generator
from dreamcanvas.generators.vqgan import VQGANGenerator, _ClampWithGrad, resolve_vqgan_files
from dreamcanvas.models.vqgan import (
    VQGAN,
    AttnBlock,
    Downsample,
    ResnetBlock,
    Upsample,
    VQGANConfig,
    load_vqgan,
    lookup,
    nearest_codes,
    parse_config,
    quantize,
    read_config,
    save_vqgan,
    taming_config,
)
from dreamcanvas.settings import GenerateSettings

# The ddconfigs of the released models (taming's configs/*.yaml and the notebook's model.yaml files).
F16_DDCONFIG = {
    "double_z": False,
    "z_channels": 256,
    "resolution": 256,
    "in_channels": 3,
    "out_ch": 3,
    "ch": 128,
    "ch_mult": [1, 1, 2, 2, 4],
    "num_res_blocks": 2,
    "attn_resolutions": [16],
    "dropout": 0.0,
}
F8_GUMBEL_DDCONFIG = {**F16_DDCONFIG, "ch_mult": [1, 1, 2, 4], "attn_resolutions": [32]}

# Small enough for optimisation loops: widths 32 and 64, one block per level, f = 2, attention at 16.
TINY_DDCONFIG = {**F16_DDCONFIG, "z_channels": 8, "resolution": 32, "ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1}


def taming_yaml(ddconfig: dict, n_embed: int, embed_dim: int, gumbel: bool = False) -> dict:
    """A config as taming writes it, training settings included (the loader must ignore them)."""
    params = {
        "embed_dim": embed_dim,
        "n_embed": n_embed,
        "monitor": "val/rec_loss",
        "ddconfig": ddconfig,
        "lossconfig": {
            "target": "taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator",
            "params": {"disc_conditional": False, "disc_in_channels": 3, "disc_start": 0, "disc_weight": 0.75},
        },
    }
    if gumbel:
        params["kl_weight"] = 1.0e-8
        params["temperature_scheduler_config"] = {"target": "taming.lr_scheduler.LambdaWarmUpCosineScheduler"}
    target = "taming.models.vqgan.GumbelVQ" if gumbel else "taming.models.vqgan.VQModel"
    return {"model": {"base_learning_rate": 4.5e-6, "target": target, "params": params}}


def expected_shapes(dd: dict, n_embed: int, embed_dim: int, gumbel: bool) -> dict[str, tuple[int, ...]]:
    """Every parameter name and shape of taming's VQModel / GumbelVQ, re-derived from its constructors
    (diffusionmodules/model.py, vqvae/quantize.py, models/vqgan.py), independently of dreamcanvas' code."""
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(name, c_in, c_out, k):
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (c_out, c_in, k, k), (c_out,)

    def norm(name, c):
        shapes[f"{name}.weight"] = shapes[f"{name}.bias"] = (c,)

    def resnet(name, c_in, c_out):
        norm(f"{name}.norm1", c_in)
        conv(f"{name}.conv1", c_in, c_out, 3)
        norm(f"{name}.norm2", c_out)
        conv(f"{name}.conv2", c_out, c_out, 3)
        if c_in != c_out:
            conv(f"{name}.nin_shortcut", c_in, c_out, 1)

    def attn(name, c):
        norm(f"{name}.norm", c)
        for part in ("q", "k", "v", "proj_out"):
            conv(f"{name}.{part}", c, c, 1)

    ch, mult, n_res, z = dd["ch"], dd["ch_mult"], dd["num_res_blocks"], dd["z_channels"]
    levels = len(mult)
    # encoder
    conv("encoder.conv_in", dd["in_channels"], ch, 3)
    res, block_in = dd["resolution"], ch
    for i in range(levels):
        block_in, block_out = ch * ([1, *mult][i]), ch * mult[i]
        for j in range(n_res):
            resnet(f"encoder.down.{i}.block.{j}", block_in, block_out)
            block_in = block_out
            if res in dd["attn_resolutions"]:
                attn(f"encoder.down.{i}.attn.{j}", block_in)
        if i != levels - 1:
            conv(f"encoder.down.{i}.downsample.conv", block_in, block_in, 3)
            res //= 2
    resnet("encoder.mid.block_1", block_in, block_in)
    attn("encoder.mid.attn_1", block_in)
    resnet("encoder.mid.block_2", block_in, block_in)
    norm("encoder.norm_out", block_in)
    conv("encoder.conv_out", block_in, z, 3)
    # decoder
    block_in, res = ch * mult[-1], dd["resolution"] // 2 ** (levels - 1)
    conv("decoder.conv_in", z, block_in, 3)
    resnet("decoder.mid.block_1", block_in, block_in)
    attn("decoder.mid.attn_1", block_in)
    resnet("decoder.mid.block_2", block_in, block_in)
    for i in reversed(range(levels)):
        for j in range(n_res + 1):
            resnet(f"decoder.up.{i}.block.{j}", block_in, ch * mult[i])
            block_in = ch * mult[i]
            if res in dd["attn_resolutions"]:
                attn(f"decoder.up.{i}.attn.{j}", block_in)
        if i != 0:
            conv(f"decoder.up.{i}.upsample.conv", block_in, block_in, 3)
            res *= 2
    norm("decoder.norm_out", block_in)
    conv("decoder.conv_out", block_in, dd["out_ch"], 3)
    # codebook and the 1x1 convs around it
    if gumbel:
        conv("quantize.proj", z, n_embed, 1)
        shapes["quantize.embed.weight"] = (n_embed, embed_dim)
    else:
        shapes["quantize.embedding.weight"] = (n_embed, embed_dim)
    conv("quant_conv", z, embed_dim, 1)
    conv("post_quant_conv", embed_dim, z, 1)
    return shapes


# Written out by hand from taming's code, as anchors that depend on neither derivation above.
F16_16384_KEYS = {
    "encoder.conv_in.weight": (128, 3, 3, 3),
    "encoder.down.0.block.0.norm1.weight": (128,),
    "encoder.down.0.block.1.conv2.weight": (128, 128, 3, 3),
    "encoder.down.2.block.0.nin_shortcut.weight": (256, 128, 1, 1),
    "encoder.down.3.downsample.conv.weight": (256, 256, 3, 3),
    "encoder.down.4.block.0.nin_shortcut.weight": (512, 256, 1, 1),
    "encoder.down.4.attn.1.q.weight": (512, 512, 1, 1),
    "encoder.mid.attn_1.proj_out.weight": (512, 512, 1, 1),
    "encoder.conv_out.weight": (256, 512, 3, 3),
    "quant_conv.weight": (256, 256, 1, 1),
    "quantize.embedding.weight": (16384, 256),
    "post_quant_conv.weight": (256, 256, 1, 1),
    "decoder.conv_in.weight": (512, 256, 3, 3),
    "decoder.mid.block_2.conv2.weight": (512, 512, 3, 3),
    "decoder.up.4.attn.1.proj_out.weight": (512, 512, 1, 1),
    "decoder.up.4.attn.2.norm.bias": (512,),
    "decoder.up.4.upsample.conv.weight": (512, 512, 3, 3),
    "decoder.up.3.block.0.nin_shortcut.weight": (256, 512, 1, 1),
    "decoder.up.1.block.0.nin_shortcut.weight": (128, 256, 1, 1),
    "decoder.up.0.block.2.norm2.bias": (128,),
    "decoder.conv_out.weight": (3, 128, 3, 3),
}
F16_ABSENT = [
    "encoder.down.4.downsample.conv.weight",  # no downsampling after the last level
    "decoder.up.0.upsample.conv.weight",  # nor upsampling after the full-size one
    "encoder.down.3.attn.0.q.weight",  # attention only at resolution 16
    "decoder.up.3.attn.0.q.weight",
    "encoder.down.0.block.0.nin_shortcut.weight",  # widths equal: no shortcut conv
    "encoder.down.0.block.0.temb_proj.weight",  # no timestep embedding in the VQGAN
    "quantize.embed.weight",
]
F8_GUMBEL_KEYS = {
    "quantize.proj.weight": (8192, 256, 1, 1),
    "quantize.proj.bias": (8192,),
    "quantize.embed.weight": (8192, 256),
    "encoder.down.3.attn.1.k.weight": (512, 512, 1, 1),
    "encoder.down.3.block.0.nin_shortcut.weight": (512, 256, 1, 1),
    "decoder.up.3.attn.2.v.weight": (512, 512, 1, 1),
    "decoder.up.2.block.0.nin_shortcut.weight": (256, 512, 1, 1),
    "decoder.up.3.upsample.conv.weight": (512, 512, 3, 3),
}
F8_ABSENT = ["quantize.embedding.weight", "encoder.down.4.block.0.conv1.weight", "decoder.up.2.attn.0.q.weight"]


# total: the parameter count the derivation gives (no published figure was found to compare it with).
@pytest.mark.parametrize(
    ("dd", "n_embed", "gumbel", "anchors", "absent", "total"),
    [
        (F16_DDCONFIG, 16384, False, F16_16384_KEYS, F16_ABSENT, 76_073_859),
        (F8_GUMBEL_DDCONFIG, 8192, True, F8_GUMBEL_KEYS, F8_ABSENT, 68_995_971),
    ],
    ids=["vqgan_imagenet_f16_16384", "openimages_f8_8192"],
)
def test_full_size_names_and_shapes_match_the_original_checkpoints(dd, n_embed, gumbel, anchors, absent, total):
    config, prefix = parse_config(taming_yaml(dd, n_embed, 256, gumbel))
    assert prefix == "" and config.gumbel is gumbel
    with torch.device("meta"):  # the real architecture, without spending time on random weights
        model = VQGAN(config)
    shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    assert shapes == expected_shapes(dd, n_embed, 256, gumbel)
    for name, shape in anchors.items():
        assert shapes[name] == shape, name
    for name in absent:
        assert name not in shapes
    assert sum(p.numel() for p in model.parameters()) == total
    assert model.factor == 2 ** (len(dd["ch_mult"]) - 1)


# The released model.yaml files are OmegaConf dumps; pyyaml must read them as they are.
F16_16384_YAML = """\
model:
  base_learning_rate: 4.5e-06
  target: taming.models.vqgan.VQModel
  params:
    embed_dim: 256
    n_embed: 16384
    monitor: val/rec_loss
    ddconfig:
      double_z: false
      z_channels: 256
      resolution: 256
      in_channels: 3
      out_ch: 3
      ch: 128
      ch_mult:
      - 1
      - 1
      - 2
      - 2
      - 4
      num_res_blocks: 2
      attn_resolutions:
      - 16
      dropout: 0.0
    lossconfig:
      target: taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator
      params:
        disc_conditional: false
        disc_in_channels: 3
        disc_start: 0
        disc_weight: 0.75
        codebook_weight: 1.0
"""
F8_GUMBEL_YAML = (
    F16_16384_YAML.replace("VQModel", "GumbelVQ")
    .replace("16384", "8192")
    .replace("      - 2\n      - 2\n      - 4", "      - 2\n      - 4")
    .replace("      - 16\n", "      - 32\n")
    .replace("    monitor:", "    kl_weight: 1.0e-08\n    monitor:")
)


def test_original_yaml_files_parse(tmp_path):
    for text, config in (
        (F16_16384_YAML, VQGANConfig(F16_DDCONFIG, 16384, 256, gumbel=False)),
        (F8_GUMBEL_YAML, VQGANConfig(F8_GUMBEL_DDCONFIG, 8192, 256, gumbel=True)),
    ):
        (tmp_path / "model.yaml").write_text(text)
        assert read_config(tmp_path / "model.yaml") == (config, "")


# -------------------------------------------------------------------------------------------------------
# the tiny model on disk


def tiny_vqgan(seed: int = 0, gumbel: bool = False, n_embed: int = 64) -> VQGAN:
    """Random weights; the codebook is spread out (N(0, 1)) so that its rows are far apart."""
    torch.manual_seed(seed)
    model = VQGAN(VQGANConfig(dict(TINY_DDCONFIG), n_embed, 8, gumbel)).eval()
    with torch.no_grad():
        model.codebook.normal_()
    return model


DISCRIMINATOR = {  # what a Lightning checkpoint of taming also holds: the loss' networks
    "loss.discriminator.main.0.weight": torch.randn(64, 3, 4, 4),
    "loss.discriminator.main.0.bias": torch.randn(64),
    "loss.logvar": torch.zeros(()),
}


def save_tiny(folder: Path, model: VQGAN, name: str = "model") -> tuple[Path, Path]:
    config = taming_yaml(model.config.ddconfig, model.config.n_embed, model.config.embed_dim, model.config.gumbel)
    paths = folder / f"{name}.yaml", folder / f"{name}.ckpt"
    save_vqgan(model, config, *paths, extra_state=DISCRIMINATOR)
    return paths


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("gumbel", [False, True], ids=["VQModel", "GumbelVQ"])
def test_save_then_load_gives_the_same_model(tmp_path, gumbel):
    model = tiny_vqgan(gumbel=gumbel)
    config_path, ckpt_path = save_tiny(tmp_path, model)
    raw = torch.load(ckpt_path, weights_only=True)
    assert set(raw) == {"state_dict"} and "loss.discriminator.main.0.weight" in raw["state_dict"]
    loaded = load_vqgan(config_path, ckpt_path)
    assert same_weights(loaded, model) and not loaded.training
    assert loaded.config.gumbel is gumbel
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    assert torch.equal(loaded(x), model(x))


def test_lightning_checkpoint_with_pickled_objects_loads_without_running_them(tmp_path, monkeypatch):
    """Lightning pickles callbacks and hyper-parameters next to the weights; weights_only refuses them."""

    class ModelCheckpoint:
        def __init__(self, monitor):
            self.monitor = monitor

    ModelCheckpoint.__module__ = "pytorch_lightning.callbacks.model_checkpoint"
    ModelCheckpoint.__qualname__ = "ModelCheckpoint"
    for name in ("pytorch_lightning", "pytorch_lightning.callbacks", "pytorch_lightning.callbacks.model_checkpoint"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    sys.modules["pytorch_lightning.callbacks.model_checkpoint"].ModelCheckpoint = ModelCheckpoint

    model = tiny_vqgan()
    config_path, _ = save_tiny(tmp_path, model)
    ckpt_path = tmp_path / "lightning.ckpt"
    torch.save(
        {
            "epoch": 3,
            "global_step": 1200,
            "pytorch-lightning_version": "1.0.8",
            "state_dict": {**model.state_dict(), **DISCRIMINATOR},
            "callbacks": {ModelCheckpoint: {"best_model_score": torch.tensor(0.1)}},
            "optimizer_states": [{"state": {}, "param_groups": [{"lr": 4.5e-6}]}],
            "hyper_parameters": ModelCheckpoint("val/rec_loss"),
        },
        ckpt_path,
    )
    monkeypatch.undo()  # Lightning is gone again, as on a user's machine
    with pytest.raises(Exception, match=r"weights_only|Unsupported global"):
        torch.load(ckpt_path, weights_only=True)
    assert same_weights(load_vqgan(config_path, ckpt_path), model)


def test_transformer_checkpoint_yields_its_first_stage(tmp_path):
    """coco, faceshq and sflckr are Net2NetTransformer checkpoints: the VQGAN is ``first_stage_model``."""
    model = tiny_vqgan()
    first_stage = taming_yaml(model.config.ddconfig, 64, 8)["model"]
    config = {
        "model": {
            "target": "taming.models.cond_transformer.Net2NetTransformer",
            "params": {
                "first_stage_config": {**first_stage, "params": {**first_stage["params"], "ckpt_path": "x.ckpt"}},
                "transformer_config": {"target": "taming.modules.transformer.mingpt.GPT"},
            },
        }
    }
    state = {f"first_stage_model.{k}": v for k, v in model.state_dict().items()}
    state["transformer.tok_emb.weight"] = torch.randn(64, 16)
    state["cond_stage_model.encoder.conv_in.weight"] = torch.randn(32, 3, 3, 3)
    (tmp_path / "coco.yaml").write_text(yaml.safe_dump(config))
    torch.save({"state_dict": state}, tmp_path / "coco.ckpt")
    assert same_weights(load_vqgan(tmp_path / "coco.yaml", tmp_path / "coco.ckpt"), model)


def test_truncated_or_garbage_checkpoint_is_one_clear_error(tmp_path):
    config_path, ckpt_path = save_tiny(tmp_path, tiny_vqgan())
    data = ckpt_path.read_bytes()
    for broken in (data[: len(data) // 2], b"not a checkpoint at all"):
        ckpt_path.write_bytes(broken)
        with pytest.raises(CorruptWeightsError) as error:
            load_vqgan(config_path, ckpt_path)
        message = str(error.value)
        assert "\n" not in message and str(ckpt_path) in message and "truncated" in message


def test_configs_that_are_not_vqgans_are_one_clear_error(tmp_path):
    model = tiny_vqgan()
    _, ckpt_path = save_tiny(tmp_path, model)
    cases = {
        "model:\n  target: ldm.models.diffusion.ddpm.LatentDiffusion\n": "model.target",
        "- just\n- a list\n": "no model.target",
        "model: {target: [unclosed\n": "not valid YAML",
        yaml.safe_dump({"model": {"target": "taming.models.vqgan.VQModel", "params": {"n_embed": 64}}}): "ddconfig",
    }
    for text, expected in cases.items():
        (tmp_path / "bad.yaml").write_text(text)
        with pytest.raises(DreamcanvasError, match=expected) as error:
            load_vqgan(tmp_path / "bad.yaml", ckpt_path)
        assert "\n" not in str(error.value)


def test_checkpoint_of_another_architecture_is_refused_with_the_differences(tmp_path):
    _, ckpt_path = save_tiny(tmp_path, tiny_vqgan(n_embed=64))
    other_config = tmp_path / "other.yaml"
    other_config.write_text(yaml.safe_dump(taming_yaml(TINY_DDCONFIG, 128, 8)))
    with pytest.raises(DreamcanvasError, match=r"does not fit.*quantize\.embedding\.weight \(64, 8\) vs \(128, 8\)"):
        load_vqgan(other_config, ckpt_path)
    with pytest.raises(DreamcanvasError, match="does not describe"):
        save_vqgan(tiny_vqgan(), taming_yaml(TINY_DDCONFIG, 128, 8), tmp_path / "a.yaml", tmp_path / "a.ckpt")


def test_encoder_and_decoder_keep_the_spatial_size():
    model = tiny_vqgan()
    x = torch.rand(1, 3, 24, 40) * 2 - 1
    latent = model.encode(x)
    assert latent.shape == (1, 8, 12, 20)
    assert model.codes(latent).shape == (1, 12, 20)
    assert model.decode(latent).shape == x.shape


def test_blocks_compute_what_tamings_compute():
    """Reference formulas for the pieces whose details no name or shape can check."""
    torch.manual_seed(0)
    down = Downsample(1, with_conv=True)
    with torch.no_grad():
        down.conv.weight.fill_(1.0)
        down.conv.bias.zero_()
    x = torch.arange(16.0).view(1, 1, 4, 4)
    # taming pads only right and bottom: the last output window hangs over the zeros
    windows = [[x[0, 0, :3, :3], x[0, 0, :3, 2:]], [x[0, 0, 2:, :3], x[0, 0, 2:, 2:]]]
    assert torch.equal(down(x)[0, 0], torch.tensor([[w.sum() for w in row] for row in windows]))
    up = Upsample(1, with_conv=False)
    assert torch.equal(up(x)[0, 0, ::2, ::2], x[0, 0]) and torch.equal(up(x)[0, 0, 1::2, 1::2], x[0, 0])

    attn = AttnBlock(32)
    x = torch.randn(2, 32, 3, 5)
    h = attn.norm(x)
    q, k, v = (conv(h).flatten(2) for conv in (attn.q, attn.k, attn.v))  # (b, c, hw)
    attention = torch.softmax(torch.einsum("bci,bcj->bij", q, k) / 32**0.5, dim=2)  # query i attends to key j
    expected = x + attn.proj_out(torch.einsum("bij,bcj->bci", attention, v).view(2, 32, 3, 5))
    assert torch.allclose(attn(x), expected, atol=1e-5)

    block = ResnetBlock(32, 64)
    x = torch.randn(1, 32, 4, 4)
    h = block.conv2(F.silu(block.norm2(block.conv1(F.silu(block.norm1(x))))))
    assert torch.allclose(block(x), block.nin_shortcut(x) + h, atol=1e-6)
    assert (block.norm1.num_groups, block.norm1.eps) == (32, 1e-6)


def test_quantize_snaps_to_the_nearest_row_with_a_straight_through_gradient():
    codebook = torch.randn(50, 4)
    latent = torch.randn(2, 4, 3, 5, requires_grad=True)
    snapped = quantize(latent, codebook)
    rows = snapped.detach().movedim(1, -1).reshape(-1, 4)
    brute = torch.cdist(latent.detach().movedim(1, -1).reshape(-1, 4), codebook).argmin(1)
    assert torch.equal(rows, codebook[brute])  # exactly the nearest rows, not approximately
    assert torch.equal(nearest_codes(latent.detach(), codebook).flatten(), brute)
    assert torch.equal(lookup(brute.view(2, 3, 5), codebook), snapped.detach())
    weight = torch.randn_like(snapped)
    (snapped * weight).sum().backward()
    assert torch.equal(latent.grad, weight)


# -------------------------------------------------------------------------------------------------------
# the generator


@pytest.fixture
def tiny_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "tiny"
    folder.mkdir()
    save_tiny(folder, tiny_vqgan())
    return folder


def tiny_generator(folder: Path, **changes) -> VQGANGenerator:
    torch.manual_seed(changes.pop("seed", 0))
    settings = GenerateSettings(generator="vqgan", vqgan_model=f"local:{folder}", width=16, height=16, precision="fp32")
    generator = create_generator(settings.replace(**changes))
    assert isinstance(generator, VQGANGenerator)
    return generator


def test_local_paths_and_registered_names_resolve(tiny_dir, tmp_path, monkeypatch):
    config, ckpt = tiny_dir / "model.yaml", tiny_dir / "model.ckpt"
    assert resolve_vqgan_files(f"local:{tiny_dir}") == (config, ckpt)
    assert resolve_vqgan_files(f"local:{ckpt}") == (config, ckpt)
    (tiny_dir / "other.yaml").write_text("model: {}\n")
    assert resolve_vqgan_files(f"local:{ckpt}") == (config, ckpt)  # the same-named sibling wins
    with pytest.raises(DreamcanvasError, match=r"exactly one \.yaml and one \.ckpt, found 2 and 1"):
        resolve_vqgan_files(f"local:{tiny_dir}")
    with pytest.raises(DreamcanvasError, match=r"neither a folder nor a \.ckpt"):
        resolve_vqgan_files(f"local:{tmp_path / 'missing'}")
    with pytest.raises(DreamcanvasError, match="local:"):
        resolve_vqgan_files(str(ckpt))

    with pytest.raises(DreamcanvasError, match=r"unknown VQGAN model 'ViT-B-32:openai'; choose one of: .*sflckr"):
        resolve_vqgan_files("ViT-B-32:openai")
    calls = []
    monkeypatch.setattr(
        weights, "fetch_files", lambda name: calls.append(name) or {"config": config, "checkpoint": ckpt}
    )
    assert resolve_vqgan_files("vqgan_imagenet_f16_16384") == (config, ckpt)
    assert calls == ["vqgan_imagenet_f16_16384"]


def test_size_is_rounded_down_to_the_downsampling_factor(tiny_dir):
    generator = tiny_generator(tiny_dir, width=19, height=11)
    assert (generator.width, generator.height) == (18, 10)
    assert generator.z.shape == (1, 8, 5, 9)
    picture = generator()
    assert picture.shape == (1, 3, 10, 18) and picture.min() >= 0 and picture.max() <= 1


def test_every_decoded_latent_vector_is_a_codebook_row(tiny_dir):
    generator = tiny_generator(tiny_dir)
    codebook = generator.vqgan.codebook
    with torch.no_grad():
        generator.z.add_(0.3 * torch.randn_like(generator.z))  # off the rows
        vectors = generator.quantized_z().movedim(1, -1).reshape(-1, 8)
        assert not torch.equal(vectors, generator.z.movedim(1, -1).reshape(-1, 8))
        assert ((vectors[:, None, :] == codebook[None]).all(-1).sum(1) >= 1).all()
        # ... and they are what the picture is made of: a nudge within a code's cell changes nothing.
        before = generator()
        assert torch.equal(before, _ClampWithGrad.apply((generator.vqgan.decode(generator.quantized_z()) + 1) / 2))
        generator.z.add_(1e-4 * torch.randn_like(generator.z))
        assert torch.equal(generator(), before)


def test_bf16_decoder_draws_the_same_picture_within_bf16_precision(tiny_dir):
    exact = tiny_generator(tiny_dir)
    fast = tiny_generator(tiny_dir, precision="bf16")
    assert fast.vqgan.decoder.conv_out.weight.dtype == torch.bfloat16
    assert fast.vqgan.encoder.conv_in.weight.dtype == torch.float32  # only the decoder changes
    assert torch.equal(exact.z, fast.z)
    picture = fast()
    assert picture.dtype == torch.float32
    assert (picture - exact()).abs().max() < 0.05
    picture.sum().backward()
    assert fast.z.grad is not None and fast.z.grad.abs().sum() > 0


def test_only_z_is_trained_and_the_vqgan_gets_no_gradient(tiny_dir):
    generator = tiny_generator(tiny_dir)
    trainable = generator.trainable_parameters()
    assert len(trainable) == 1 and trainable[0] is generator.z
    assert all(not p.requires_grad for p in generator.vqgan.parameters())
    generator().mean().backward()
    assert generator.z.grad is not None and generator.z.grad.abs().sum() > 0
    assert all(p.grad is None for p in generator.vqgan.parameters())


def test_loss_falls_when_optimising_toward_a_target_picture(tiny_dir):
    with torch.no_grad():
        target = tiny_generator(tiny_dir, seed=1)()  # reachable: another random grid of codes
    generator = tiny_generator(tiny_dir, seed=2)
    optimizer = torch.optim.Adam(generator.trainable_parameters(), lr=generator.default_lr)
    losses = []
    for _ in range(20):
        loss = (generator() - target).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        generator.constrain_()
        losses.append(loss.item())
    assert min(losses[-5:]) < 0.8 * losses[0], losses


def test_constrain_keeps_z_inside_the_codebook_box(tiny_dir):
    generator = tiny_generator(tiny_dir)
    lo, hi = generator.vqgan.codebook.amin(0), generator.vqgan.codebook.amax(0)
    inside = generator.z.detach().clone()
    generator.constrain_()
    assert torch.equal(generator.z, inside)  # codebook rows are inside already
    with torch.no_grad():
        generator.z.mul_(10)
    generator.constrain_()
    z = generator.z.detach().movedim(1, -1)
    assert (z >= lo).all() and (z <= hi).all()
    assert (z == hi).any() and (z == lo).any()


def test_from_image_starts_from_the_models_own_reconstruction(tiny_dir):
    generator = tiny_generator(tiny_dir)
    image = torch.rand(1, 3, 16, 16)
    generator.from_image(image)
    with torch.no_grad():
        expected = (generator.vqgan(image * 2 - 1) + 1) / 2
        assert torch.allclose(generator(), expected.clamp(0, 1), atol=1e-5)
    generator.from_image(torch.rand(1, 3, 40, 24))  # another size is resized first
    assert generator.z.shape == (1, 8, 8, 8)


@pytest.mark.parametrize("init_noise", ["none", "pixels", "gradient"])
def test_initialisations_start_on_codebook_rows_and_follow_the_seed(tiny_dir, init_noise):
    first = tiny_generator(tiny_dir, init_noise=init_noise, seed=3)
    again = tiny_generator(tiny_dir, init_noise=init_noise, seed=3)
    other = tiny_generator(tiny_dir, init_noise=init_noise, seed=4)
    assert torch.equal(first.z, again.z) and not torch.equal(first.z, other.z)
    vectors = first.z.detach().movedim(1, -1).reshape(-1, 8)
    assert ((vectors[:, None, :] == first.vqgan.codebook[None]).all(-1).any(1)).all()


def test_unknown_init_noise_is_refused(tiny_dir):
    with pytest.raises(DreamcanvasError, match="init-noise"):
        tiny_generator(tiny_dir, init_noise="perlin")


def test_state_dict_holds_only_z_and_restores_the_picture(tiny_dir):
    first = tiny_generator(tiny_dir, seed=5)
    assert list(first.state_dict()) == ["z"]
    second = tiny_generator(tiny_dir, seed=6)
    second.load_state_dict(first.state_dict())  # strict: the VQGAN's weights are not expected
    with torch.no_grad():
        assert torch.equal(second(), first())
    with pytest.raises(RuntimeError, match="Unexpected"):
        second.load_state_dict({**first.state_dict(), "stray": torch.zeros(1)})


def test_clamp_with_grad_lets_through_only_gradients_that_lead_back_inside():
    x = torch.tensor([-0.5, 0.5, 1.5, 1.5, -0.5], requires_grad=True)
    y = _ClampWithGrad.apply(x)
    assert torch.equal(y, torch.tensor([0.0, 0.5, 1.0, 1.0, 0.0]))
    y.backward(torch.tensor([-1.0, 1.0, 1.0, -1.0, 1.0]))  # descent moves x by -grad
    assert torch.equal(x.grad, torch.tensor([-1.0, 1.0, 1.0, 0.0, 0.0]))


def test_taming_config_round_trips():
    for gumbel in (False, True):
        config = VQGANConfig(dict(TINY_DDCONFIG), 64, 8, gumbel)
        assert parse_config(taming_config(config)) == (config, "")


def test_registered_vqgan_models():
    sources = {s.name: s for s in weights.list_sources() if s.kind == "vqgan"}
    names = {"vqgan_imagenet_f16_1024", "vqgan_imagenet_f16_16384", "wikiart_16384", "coco", "faceshq", "sflckr"}
    names.add("openimages_f8_8192")
    assert names <= sources.keys()
    assert GenerateSettings().vqgan_model in sources
    for name in names:
        files = {f.role: f for f in sources[name].files}
        assert files.keys() == {"config", "checkpoint"}
        assert (files["config"].filename, files["checkpoint"].filename) == (f"{name}.yaml", f"{name}.ckpt")
        assert all(f.url and f.url.startswith("http") for f in files.values())


# -------------------------------------------------------------------------------------------------------
# VQGAN+CLIP end to end, through the engine


def test_vqgan_clip_run_lowers_the_loss_and_resumes_exactly(tiny_dir, tmp_path, tiny_clip_spec):
    from helpers import tiny_settings

    from dreamcanvas.engine import generate, resume

    settings = tiny_settings(
        tiny_clip_spec,
        generator="vqgan",
        vqgan_model=f"local:{tiny_dir}",
        width=31,
        height=21,
        iterations=24,
        save_every=4,
        zoom=True,
        zoom_every=8,
        zoom_scale=1.1,
    )
    straight = generate(settings, tmp_path / "straight")
    assert straight.image_path.exists()
    with Image.open(straight.image_path) as picture:
        assert picture.size == (30, 20)  # rounded down to the tiny model's factor 2
    # the loss falls on a run without zoom: each zoom moves the picture and the loss with it, and over 24 steps
    # those jumps outweigh the fall on some CPUs (measured on AVX2: first four 1.154, last four 1.162 with zoom)
    plain = generate(settings.replace(zoom=False), tmp_path / "plain")
    assert np.mean(plain.losses[-6:]) < np.mean(plain.losses[:6]) - 0.01

    def ctrl_c(report):
        if report.step == 10:
            raise KeyboardInterrupt

    generate(settings, tmp_path / "stopped", on_step=ctrl_c)
    resumed = resume(tmp_path / "stopped")
    assert resumed.losses == straight.losses
    assert resumed.image_path.read_bytes() == straight.image_path.read_bytes()


def test_bundled_vqgan_resolves_inside_the_package(tiny_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(weights.registry, "bundled_dir", lambda name: tiny_dir if name == "vqgan" else tmp_path / name)
    generator = tiny_generator(tiny_dir, vqgan_model="bundled:vqgan")
    assert generator().shape[-2:] == (16, 16)
    with pytest.raises(DreamcanvasError, match="no bundled VQGAN 'bundled:nothing'"):
        tiny_generator(tiny_dir, vqgan_model="bundled:nothing")
    assert oct((tiny_dir / "model.ckpt").stat().st_mode & 0o777) == "0o644"


def test_the_bundled_vqgan_loads_and_draws(tmp_path):
    """The shipped file goes through the real loader: taming names, fp16 weights, the f8 factor."""
    generator = create_generator(
        GenerateSettings(generator="vqgan", vqgan_model="bundled:vqgan", width=40, height=36, precision="fp32")
    )
    assert (generator.width, generator.height) == (40, 32)
    picture = generator()
    assert picture.shape == (1, 3, 32, 40) and picture.min() >= 0 and picture.max() <= 1
