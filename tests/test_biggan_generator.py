"""``--generator biggan``: BigSleep's latents, losses and moving average, through the real loop.

A tiny BigGAN-deep of the real architecture (1000 classes and ``z_dim`` 128 as the published ones, so the latents
have BigSleep's shapes; 4 channels a unit, 32 px) is saved in the port's folder layout and loaded through
``--biggan-model local:DIR``; CLIP is the shared tiny random model. Nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import run_cli, tiny_settings, tree, write_picture

from dreamcanvas import memory
from dreamcanvas.engine import generate, resume
from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.generators import create_generator
from dreamcanvas.generators.biggan import (
    CHOSEN_CLASS_LOGIT,
    BigGANGenerator,
    class_indices,
    class_loss,
    differentiable_top_k,
    latent_loss,
)
from dreamcanvas.memory.shapes import biggan_shape
from dreamcanvas.models.biggan import BigGAN, BigGANConfig, TruncationBatchNorm
from dreamcanvas.settings import GenerateSettings

TINY = BigGANConfig(output_dim=32, channel_width=4, layers=[(False, 16, 16), (True, 16, 8), (False, 8, 4),
                    (True, 4, 2), (False, 2, 2), (True, 2, 1)], attention_layer_position=2)  # fmt: skip
ROWS = len(TINY.layers) + 1


@torch.no_grad()
def random_biggan(config: BigGANConfig, seed: int = 0) -> BigGAN:
    """Random weights, spectral-norm vectors as a power iteration leaves them, and batch-norm statistics taken
    from one draw (as trained ones describe what each layer sees), so the pictures are neither flat nor
    saturated; every truncation row slightly different. Each residual branch's last batch norm divides by 10
    more: small branches, as in a trained network, draw pictures that change smoothly with the latents (a
    random deep network is chaotic: a change in the fourth digit of z would redraw the picture)."""
    generator = torch.Generator().manual_seed(seed)
    model = BigGAN(config).eval().requires_grad_(False)
    for name, tensor in model.state_dict().items():
        if name.endswith("weight_orig") or name.startswith("embeddings"):
            tensor.copy_(torch.randn(tensor.shape, generator=generator))
        elif name.endswith("gamma"):
            tensor.fill_(0.5)
        elif name.endswith(("bias", "weight")):  # the last batch norm's affine, the convolutions' biases
            tensor.fill_(1.0 if name.endswith("bn.weight") else 0.0)
    for module in model.modules():
        if hasattr(module, "weight_orig"):
            matrix = module.weight_orig.reshape(module.weight_orig.shape[0], -1)
            v = F.normalize(torch.randn(matrix.shape[1], generator=generator), dim=0)
            module.weight_v.copy_(v)
            module.weight_u.copy_(F.normalize(matrix @ v, dim=0))

    def describe_input(norm: TruncationBatchNorm, args: tuple) -> None:
        x = args[0]
        spread = 1 + 0.1 * torch.rand(norm.running_vars.shape, generator=generator)
        norm.running_means.copy_(x.mean((0, 2, 3)).expand_as(norm.running_means))
        norm.running_vars.copy_(x.var((0, 2, 3)) * spread * (100 if norm in branch_ends else 1))

    branch_ends = {module for name, module in model.named_modules() if name.endswith(".bn_3")}
    norms = [module for module in model.modules() if isinstance(module, TruncationBatchNorm)]
    hooks = [norm.register_forward_pre_hook(describe_input) for norm in norms]
    z = torch.randn(4, config.z_dim, generator=generator)
    model(z, torch.sigmoid(torch.randn(4, config.num_classes, generator=generator) * 0.3 - 3.9), 1.0)
    for hook in hooks:
        hook.remove()
    model.generator.bn.weight.fill_(0.3)  # the last layer's scale: a picture mostly inside tanh's linear range
    return model


@pytest.fixture(scope="module")
def tiny_biggan_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-biggan")
    (folder / "config.json").write_text(TINY.to_json())
    torch.save(random_biggan(TINY).state_dict(), folder / "pytorch_model.bin")
    return folder


def biggan_settings(clip_spec: str, folder: Path, **changes) -> GenerateSettings:
    base = tiny_settings(clip_spec, generator="biggan", biggan_model=f"local:{folder}", cutn=8, iterations=16,
                         save_every=4, precision="fp32")  # fmt: skip
    return base.replace(**changes)


def tiny_generator(folder: Path, **changes) -> BigGANGenerator:
    torch.manual_seed(0)
    settings = GenerateSettings(prompts=["a"], generator="biggan", biggan_model=f"local:{folder}", width=32,
                                height=32, precision="fp32").replace(**changes)  # fmt: skip
    generator = create_generator(settings)
    assert isinstance(generator, BigGANGenerator)
    return generator


# -------------------------------------------------------------------------------------------------------
# the latents, the picture, what is trained and saved


def test_latents_have_bigsleeps_shapes_and_start(tiny_biggan_dir):
    generator = tiny_generator(tiny_biggan_dir)
    assert generator.normu.shape == (ROWS, 128) and generator.cls.shape == (ROWS, 1000)
    assert abs(generator.normu.mean().item()) < 0.05 and abs(generator.normu.std().item() - 1) < 0.05
    assert abs(generator.cls.mean().item() + 3.9) < 0.01 and abs(generator.cls.std().item() - 0.3) < 0.01
    assert generator.trainable_parameters() == [generator.normu, generator.cls]
    assert not any(parameter.requires_grad for parameter in generator.biggan.parameters())
    assert set(generator.state_dict()) == {"normu", "cls", "ema_decayed", "ema_normu", "ema_cls"}
    assert generator.default_lr == 0.07


def test_the_picture_is_in_range_and_cropped_to_the_size_without_stretching(tiny_biggan_dir):
    generator = tiny_generator(tiny_biggan_dir, width=48, height=24)
    picture = generator()
    assert picture.shape == (1, 3, 24, 48) and picture.dtype == torch.float32
    assert picture.min() >= 0 and picture.max() <= 1 and picture.std() > 0.02
    native = tiny_generator(tiny_biggan_dir)()  # same seed, native 32x32
    covered = F.interpolate(native, size=(48, 48), mode="bilinear", antialias=True, align_corners=False)
    torch.testing.assert_close(picture, covered[:, :, 12:36])
    picture.sum().backward()
    assert generator.normu.grad.abs().sum() > 0 and generator.cls.grad.abs().sum() > 0


def test_bf16_draws_the_same_picture_within_bf16_precision(tiny_biggan_dir):
    exact, fast = tiny_generator(tiny_biggan_dir), tiny_generator(tiny_biggan_dir, precision="bf16")
    assert fast.biggan.generator.gen_z.weight_orig.dtype == torch.bfloat16
    assert fast.normu.dtype == torch.float32 and torch.equal(exact.normu, fast.normu)
    picture = fast()
    assert picture.dtype == torch.float32 and picture.min() >= 0 and picture.max() <= 1
    assert (picture - exact()).abs().mean() < 0.02
    (picture.sum() + fast.penalty()).backward()
    assert fast.normu.grad.abs().sum() > 0


def test_bigsleep_has_no_init_image(tiny_biggan_dir):
    with pytest.raises(DreamcanvasError, match="cannot start from a picture"):
        tiny_generator(tiny_biggan_dir).from_image(torch.rand(1, 3, 32, 32))


# -------------------------------------------------------------------------------------------------------
# BigSleep's losses and classes, against its formulas written out as big-sleep writes them


def bigsleep_latent_loss(latents: torch.Tensor) -> torch.Tensor:
    """big-sleep's ``lat_loss`` in its own shape: the three vector terms, then a loop over the rows."""
    loss = (torch.abs(1 - torch.std(latents, dim=1)).mean() + torch.abs(torch.mean(latents, dim=1)).mean()
            + 4 * torch.max(torch.square(latents).mean(), torch.tensor(1)))  # fmt: skip
    for row in latents:
        diffs = row - torch.mean(row)
        zscores = diffs / torch.pow(torch.mean(torch.pow(diffs, 2.0)), 0.5)
        skew, kurtosis = torch.mean(torch.pow(zscores, 3.0)), torch.mean(torch.pow(zscores, 4.0)) - 3.0
        loss = loss + torch.abs(kurtosis) / len(latents) + torch.abs(skew) / len(latents)
    return loss


def test_latent_and_class_losses_are_bigsleeps():
    torch.manual_seed(1)
    for latents in (torch.randn(ROWS, 128), 1.7 * torch.randn(ROWS, 128).pow(3) + 0.3):  # near N(0, 1); far
        torch.testing.assert_close(latent_loss(latents), bigsleep_latent_loss(latents))
    classes = torch.sigmoid(torch.randn(ROWS, 1000) * 0.3 - 3.9)
    bigsleep = ((50 * torch.topk(classes, largest=False, dim=1, k=999)[0]) ** 2).mean()
    torch.testing.assert_close(class_loss(classes), bigsleep)
    assert latent_loss(torch.randn(ROWS, 128)) < latent_loss(3 * torch.randn(ROWS, 128))  # mean square above 1


def test_the_penalty_is_bigsleeps_regularisers_over_its_clip_weight(tiny_biggan_dir):
    generator = tiny_generator(tiny_biggan_dir)
    expected = (latent_loss(generator.normu) + class_loss(torch.sigmoid(generator.cls))) / 100
    torch.testing.assert_close(generator.penalty(), expected)
    generator.penalty().backward()
    assert generator.normu.grad.abs().sum() > 0 and generator.cls.grad.abs().sum() > 0


def test_top_k_keeps_at_most_k_classes_each_in_the_unit_range():
    logits = torch.randn(ROWS, 1000, requires_grad=True)
    weights = differentiable_top_k(logits, 3, 2.0)
    assert ((weights > 0).sum(dim=1) == 3).all() and weights.min() >= 0 and weights.max() <= 1
    assert torch.equal(weights.topk(3).indices.sort().values, logits.topk(3).indices.sort().values)
    first = (logits / 2.0).softmax(dim=-1).max(dim=-1).values
    torch.testing.assert_close(weights.max(dim=-1).values, first)  # the first pick keeps its softmax value
    weights.sum().backward()
    assert logits.grad.abs().sum() > 0


def test_moving_average_is_bigsleeps_bias_corrected_one(tiny_biggan_dir):
    generator = tiny_generator(tiny_biggan_dir, ema_decay=0.9)
    start = generator.normu.detach().clone()
    normu, _ = generator.averaged_latents()
    torch.testing.assert_close(normu, start)  # big-sleep's first update: the average is the start
    history = [start]
    for step in range(3):
        with torch.no_grad():
            generator.normu.add_(0.1 * (step + 1))
        generator.constrain_()
        history.append(generator.normu.detach().clone())
    weights = torch.tensor([0.9 ** (len(history) - 1 - i) * 0.1 for i in range(len(history))])
    expected = sum(w * h for w, h in zip(weights, history, strict=True)) / weights.sum()
    torch.testing.assert_close(generator.averaged_latents()[0], expected)
    assert not torch.allclose(generator.picture_to_keep(generator()), generator())
    raw = tiny_generator(tiny_biggan_dir, ema_decay=0.0)
    with torch.no_grad():
        raw.normu.add_(0.5)
    raw.constrain_()
    torch.testing.assert_close(raw.picture_to_keep(raw()), raw().detach())


# -------------------------------------------------------------------------------------------------------
# ImageNet classes by name


def test_biggan_classes_by_name_or_number_start_strong(tiny_biggan_dir):
    assert class_indices(["goldfish", "Golden Retriever", "207", "Cardigan", "cardigan"]) == [1, 207, 207, 264, 474]
    generator = tiny_generator(tiny_biggan_dir, biggan_classes=["golden retriever"])
    assert (generator.cls[:, 207] == CHOSEN_CLASS_LOGIT).all()
    assert (generator.cls[:, 208] < 0).all()
    plain = tiny_generator(tiny_biggan_dir)
    assert torch.equal(plain.normu, generator.normu)  # the same random start otherwise
    picks = tiny_generator(tiny_biggan_dir, biggan_classes=["goldfish"], max_classes=2).class_weights(plain.cls)
    assert picks.shape == (ROWS, 1000) and ((picks > 0).sum(dim=1) == 2).all()


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("golden retriver", "'golden retriver' is not an ImageNet class; did you mean golden retriever"),
        ("CARDIGAN", "names several ImageNet classes: give one number, 264 (Cardigan), 474 (cardigan)"),
        ("qwertyuiop", "give an ImageNet class name or number 0-999"),
    ],
)
def test_a_bad_class_name_is_one_line_before_anything_is_written(tiny_clip_spec, tiny_biggan_dir, tmp_path, capsys,
                                                                 name, message):  # fmt: skip
    code, _, err = run_cli(
        ["generate", "a red apple", "--generator", "biggan", "--biggan-model", f"local:{tiny_biggan_dir}",
         "--clip", tiny_clip_spec, "--biggan-class", name, "--quiet", "--out", tmp_path / "run"], capsys)  # fmt: skip
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("flags", "message"), [(["--zoom"], "--zoom"), (["--init-image", "init.png"], "--init-image")])
def test_init_image_and_zoom_are_refused_before_anything_is_written(tiny_clip_spec, tiny_biggan_dir, tmp_path,
                                                                    capsys, monkeypatch, flags, message):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    write_picture(tmp_path / "init.png", (200, 30, 30))
    before = tree(tmp_path)
    code, _, err = run_cli(
        ["generate", "a red apple", "--generator", "biggan", "--biggan-model", f"local:{tiny_biggan_dir}",
         "--clip", tiny_clip_spec, "--quiet", *flags, "--out", "run"], capsys)  # fmt: skip
    assert code == 2 and err.count("\n") == 1 and message in err and "biggan" in err, err
    assert tree(tmp_path) == before


def test_max_classes_beyond_the_models_classes_is_refused(tiny_biggan_dir):
    with pytest.raises(DreamcanvasError, match="--max-classes must be between 0 and 1000"):
        tiny_generator(tiny_biggan_dir, max_classes=1001)


# -------------------------------------------------------------------------------------------------------
# through the engine and the command line


def test_bigsleep_run_lowers_the_loss_repeats_and_resumes_exactly(tiny_clip_spec, tiny_biggan_dir, tmp_path):
    settings = biggan_settings(tiny_clip_spec, tiny_biggan_dir, width=40, height=32)
    straight = generate(settings, tmp_path / "straight")
    assert np.mean(straight.losses[-4:]) < np.mean(straight.losses[:4])
    again = generate(settings, tmp_path / "again")
    assert again.image_path.read_bytes() == straight.image_path.read_bytes()

    def ctrl_c(report):
        if report.step == 6:
            raise KeyboardInterrupt

    stopped = generate(settings, tmp_path / "stopped", on_step=ctrl_c)
    assert not stopped.completed and stopped.step == 6
    resumed = resume(tmp_path / "stopped")
    assert resumed.losses == straight.losses
    assert resumed.image_path.read_bytes() == straight.image_path.read_bytes()
    for frame in sorted((tmp_path / "straight" / "frames").iterdir()):
        assert (tmp_path / "stopped" / "frames" / frame.name).read_bytes() == frame.read_bytes()
    checkpoint = torch.load(tmp_path / "stopped" / "state.pt", weights_only=True)
    assert not any(key.startswith("biggan.") for key in checkpoint["generator"])  # weights come from the settings


def test_the_loss_reported_includes_bigsleeps_regularisers(tiny_clip_spec, tiny_biggan_dir, tmp_path):
    """One step with CLIP's prompt weighted 0: what is left of the loss is the generator's penalty alone."""
    settings = biggan_settings(tiny_clip_spec, tiny_biggan_dir, prompts=["a red apple:0"], iterations=1)
    result = generate(settings, tmp_path / "run")
    torch.manual_seed(settings.seed)
    expected = create_generator(settings).penalty().item()
    assert result.losses == [pytest.approx(expected, rel=1e-6)]


def test_the_cli_draws_with_bigsleep_and_top_k_classes(tiny_clip_spec, tiny_biggan_dir, tmp_path, capsys):
    code, out, err = run_cli(
        ["generate", "a red apple", "--generator", "biggan", "--biggan-model", f"local:{tiny_biggan_dir}",
         "--clip", tiny_clip_spec, "--size", "32", "32", "--cutn", "4", "-i", "3", "--seed", "5", "--max-classes",
         "3", "--class-temperature", "1.5", "--ema-decay", "0.9", "--truncation", "0.8", "--biggan-class",
         "goldfish", "--biggan-class", "tench", "--precision", "fp32", "--quiet", "--out", tmp_path / "run"],
        capsys)  # fmt: skip
    assert code == 0, err
    assert Path(out.strip()).is_file()
    stored = json.loads((tmp_path / "run" / "run.json").read_text())["settings"]
    assert {key: stored[key] for key in ("generator", "max_classes", "class_temperature", "ema_decay",
            "truncation", "biggan_classes")} == {"generator": "biggan", "max_classes": 3, "class_temperature": 1.5,
            "ema_decay": 0.9, "truncation": 0.8, "biggan_classes": ["goldfish", "tench"]}  # fmt: skip


def test_the_memory_estimate_counts_biggan_by_its_published_configurations(tiny_biggan_dir):
    assert [biggan_shape(f"biggan-deep-{size}").parameters for size in (128, 256, 512)] == [
        50_388_609, 55_880_833, 56_163_905]  # fmt: skip
    with torch.device("meta"):
        tiny_parameters = sum(p.numel() for p in BigGAN(TINY).parameters())
    assert biggan_shape(f"local:{tiny_biggan_dir}").parameters == tiny_parameters

    def estimate(**changes) -> int:
        return memory.estimate_generate(GenerateSettings(prompts=["a"], cutn=16, **changes)).total_bytes

    assert estimate(generator="biggan", precision="fp32") > estimate(generator="fourier", precision="fp32") + 1e9
    assert estimate(generator="biggan", biggan_model="biggan-deep-512") > estimate(generator="biggan") + 5e8
    assert estimate(generator="biggan", biggan_model="no-such-model") == estimate(generator="biggan")
