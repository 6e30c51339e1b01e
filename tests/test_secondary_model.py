"""Disco Diffusion's secondary model against fixtures made by running the original class, and its guidance.

The files in ``tests/data`` were made once, outside this repository, with ``SecondaryDiffusionImageNet2`` as
defined in alembics/disco-diffusion ``disco.py`` (section 1.6) at commit 37eb39b: ``secondary_keys.json`` holds the
sorted ``[name, shape]`` pairs of its state dict (built on the meta device), ``secondary_64_reference.json`` its
output for seeded weights and input on the CPU (the recipe is written inside it and repeated by
:func:`seeded_weights`). They are data, not code.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import ShellPayload

from dreamcanvas import weights
from dreamcanvas.diffusion import denoise, timestep_batch
from dreamcanvas.diffusion.guidance import Guided, range_loss
from dreamcanvas.diffusion.schedule import linear_schedule, respaced, space_timesteps
from dreamcanvas.diffusion.secondary import secondary_gradient, secondary_time
from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.files.checkpoints import DamagedCheckpointError, UnsafeCheckpointError
from dreamcanvas.models.guided_unet import UNetFlags, build_unet
from dreamcanvas.models.secondary import SecondaryModel, alpha_sigma_to_t, load_secondary, t_to_alpha_sigma

DATA = Path(__file__).parent / "data"
SHA256 = "983e3de6f95c88c81b2ca7ebb2c217933be1973b1ff058776b970f901584613a"


def names_and_shapes(model: torch.nn.Module) -> list[list]:
    return sorted([key, list(value.shape)] for key, value in model.state_dict().items())


def on_meta() -> SecondaryModel:
    with torch.device("meta"):
        return SecondaryModel()


def seeded_weights(model: torch.nn.Module, seed: int = 0, std: float = 0.05) -> dict[str, torch.Tensor]:
    """The fixture's recipe: sorted names, one generator, ``randn(shape) * std`` each."""
    generator = torch.Generator().manual_seed(seed)
    return {key: torch.randn(shape, generator=generator) * std for key, shape in names_and_shapes(model)}


def seeded_model(seed: int = 0, std: float = 0.05) -> SecondaryModel:
    model = on_meta()
    model.load_state_dict(seeded_weights(model, seed, std), strict=True, assign=True)
    return model.eval()


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert message and "\n" not in message
    return message


# -------------------------------------------------------------------------------------------------------
# the released architecture and its computation


def test_names_shapes_and_size_are_the_originals() -> None:
    model = on_meta()
    state = model.state_dict()
    assert sum(value.numel() for value in state.values()) == 13_841_547
    assert sum(p.numel() for p in model.parameters()) == 13_841_547
    assert names_and_shapes(model) == json.loads((DATA / "secondary_keys.json").read_text())
    assert list(state)[:3] == ["timestep_embed.weight", "net.0.0.weight", "net.0.0.bias"]


def test_outputs_are_the_originals() -> None:
    reference = json.loads((DATA / "secondary_64_reference.json").read_text())
    model = seeded_model(reference["weight_seed"], reference["weight_std"])
    x = torch.rand(reference["input_shape"], generator=torch.Generator().manual_seed(reference["input_seed"])) * 2 - 1
    with torch.no_grad():
        out = model(x, torch.tensor(reference["t"]))
    # the reference was computed in float32 on a CPU with AVX512 kernels; an AVX2 CPU's kernels round otherwise
    # (3.8e-5 apart at most, measured), while a wrong layer, order or constant moves every value by ~1e-1
    close = {"rtol": 1e-3, "atol": 1e-4}
    torch.testing.assert_close(F.avg_pool2d(out.v, 8), torch.tensor(reference["v_avg_pool_8"]), **close)
    for name in ("v", "pred", "eps"):
        value = getattr(out, name)
        assert list(value.shape) == reference[f"{name}_shape"]
        torch.testing.assert_close(value.flatten()[:32], torch.tensor(reference[f"{name}_first_32"]), **close)
        assert value.mean().item() == pytest.approx(reference[f"{name}_mean"], rel=1e-4)
        assert value.std().item() == pytest.approx(reference[f"{name}_std"], rel=1e-4)


def test_v_objective_helpers_and_outputs_agree() -> None:
    t = torch.linspace(0.0, 1.0, 11)
    alpha, sigma = t_to_alpha_sigma(t)
    torch.testing.assert_close(alpha**2 + sigma**2, torch.ones(11))
    torch.testing.assert_close(alpha_sigma_to_t(alpha, sigma), t, rtol=0, atol=1e-6)
    torch.testing.assert_close(alpha_sigma_to_t(3 * alpha, 3 * sigma), t, rtol=0, atol=1e-6)

    model = seeded_model(seed=2)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3)) * 2 - 1
    with torch.no_grad():
        out = model(x, torch.tensor([0.25, 0.25]))
        shared = model(x, 0.25)
    alpha, sigma = t_to_alpha_sigma(torch.tensor(0.25))
    # v = alpha eps - sigma x0 with x = alpha x0 + sigma eps: pred and eps rebuild x and v.
    torch.testing.assert_close(alpha * out.pred + sigma * out.eps, x, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(alpha * out.eps - sigma * out.pred, out.v, rtol=1e-4, atol=1e-4)
    for ours, theirs in zip(shared, out, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


# -------------------------------------------------------------------------------------------------------
# loading files and the registry


def test_state_dict_round_trips(tmp_path: Path) -> None:
    saved = seeded_model(seed=4)
    path = tmp_path / "secondary_model_imagenet_2.pth"
    torch.save(saved.state_dict(), path)
    loaded = load_secondary(path)
    assert isinstance(loaded, SecondaryModel) and not loaded.training
    assert all(torch.equal(loaded.state_dict()[key], value) for key, value in saved.state_dict().items())


def test_weights_of_another_network_give_one_line(tmp_path: Path) -> None:
    state = seeded_model().state_dict()
    path = tmp_path / "other.pth"
    torch.save({**state, "net.0.0.weight": torch.zeros(64, 3, 3, 3)}, path)
    with pytest.raises(DreamcanvasError) as error:
        load_secondary(path)
    assert str(path) in one_line(error) and "net.0.0.weight" in one_line(error)

    del state["timestep_embed.weight"]
    torch.save({**state, "extra.weight": torch.zeros(1)}, path)
    with pytest.raises(DreamcanvasError) as error:
        load_secondary(path)
    assert "timestep_embed.weight" in one_line(error) and "extra.weight" in one_line(error)

    torch.save([torch.zeros(1)], path)
    with pytest.raises(DamagedCheckpointError) as error:
        load_secondary(path)
    assert "not a plain state dict" in one_line(error)


def test_code_running_pickle_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pth"
    torch.save({"timestep_embed.weight": ShellPayload(marker)}, path)
    with pytest.raises(UnsafeCheckpointError) as error:
        load_secondary(path)
    assert "secondary model" in one_line(error)
    assert not marker.exists()


def test_registered() -> None:
    source = weights.find_source("secondary_model_imagenet_2")
    assert source is not None and source.kind == "secondary" and source.license == "MIT"
    (checkpoint,) = source.files
    assert checkpoint.role == "checkpoint" and checkpoint.filename == "secondary_model_imagenet_2.pth"
    assert checkpoint.url == "https://v-diffusion.s3.us-west-2.amazonaws.com/secondary_model_imagenet_2.pth"
    assert checkpoint.sha256 == SHA256 and source.size_mb == 55


# -------------------------------------------------------------------------------------------------------
# guidance through the secondary model

TINY_UNET = UNetFlags.from_dict(
    {
        "image_size": 32,
        "num_channels": 32,
        "num_res_blocks": 1,
        "channel_mult": "1,2",
        "attention_resolutions": "16",
        "num_head_channels": 32,
        "learn_sigma": True,
    }
)


@pytest.fixture(scope="module")
def schedule():
    return respaced(linear_schedule(), space_timesteps(1000, "25"))


def test_time_is_discos_conversion(schedule) -> None:
    t = torch.arange(schedule.num_timesteps)
    # Disco: float32 tensors of the float64 sqrt tables, then atan2(sigma, alpha) * 2 / pi.
    alpha = torch.tensor(schedule.sqrt_alphas_cumprod.numpy(), dtype=torch.float32)
    sigma = torch.tensor(schedule.sqrt_one_minus_alphas_cumprod.numpy(), dtype=torch.float32)
    expected = torch.atan2(sigma, alpha) * 2 / math.pi
    ours = secondary_time(schedule, t)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, expected, rtol=0, atol=0)
    assert (ours.diff() > 0).all() and 0 < ours[0] < ours[-1] < 1


def _counted(module: torch.nn.Module) -> dict[str, int]:
    calls = {"forward": 0, "backward": 0}
    module.register_forward_hook(lambda *_: calls.__setitem__("forward", calls["forward"] + 1))
    module.register_full_backward_hook(lambda *_: calls.__setitem__("backward", calls["backward"] + 1))
    return calls


def brighter(x_in: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """A loss that is lower the brighter CLIP's image."""
    return -x_in.mean(dim=(1, 2, 3)).sum()


def test_secondary_gradient_differentiates_only_the_secondary_model(schedule) -> None:
    torch.manual_seed(0)
    unet = build_unet(TINY_UNET).eval()
    secondary = seeded_model(seed=5, std=0.03)
    unet_calls, secondary_calls = _counted(unet), _counted(secondary)
    x_t = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    t = timestep_batch(12, 2)
    unet_out = denoise(schedule, unet, x_t, t)
    assert unet_calls["forward"] == 1

    guided = secondary_gradient(schedule, brighter, x_t, t, unet_out, secondary)

    assert isinstance(guided, Guided)
    assert unet_calls == {"forward": 1, "backward": 0}
    assert secondary_calls == {"forward": 1, "backward": 1}
    assert all(p.grad is None for p in unet.parameters()) and all(p.grad is None for p in secondary.parameters())
    assert guided.model_out is not None and torch.equal(guided.model_out, unet_out)
    assert not guided.model_out.requires_grad and not guided.grad.requires_grad and not guided.loss.requires_grad
    assert guided.grad.shape == x_t.shape and torch.isfinite(guided.grad).all() and x_t.grad is None

    # the same gradient as Disco's cond_fn computes it: blend with the float64 fac, grad of x_in, then chain to x
    x = x_t.detach().requires_grad_()
    fac = schedule.sqrt_one_minus_alphas_cumprod.numpy()[12]
    cosine_t = alpha_sigma_to_t(
        torch.tensor(schedule.sqrt_alphas_cumprod.numpy()[12], dtype=torch.float32),
        torch.tensor(fac, dtype=torch.float32),
    )
    out = secondary(x, cosine_t[None].repeat([2])).pred
    x_in = out * fac + x * (1 - fac)
    x_in_grad = torch.autograd.grad(brighter(x_in, out), x_in)[0]
    disco = -torch.autograd.grad(x_in, x, x_in_grad)[0]
    torch.testing.assert_close(guided.grad, disco, rtol=1e-4, atol=1e-5 * disco.abs().max().item())
    assert guided.loss.item() == pytest.approx(brighter(x_in, out).item(), rel=1e-6)

    # Disco differentiates its loss with respect to x_in only, so a term on the prediction (its range loss) adds
    # nothing there; like guided_gradient, the loss here is differentiated to x_t through both of its arguments.
    on_pred = secondary_gradient(schedule, lambda x_in, pred: 100 * range_loss(pred).sum(), x_t, t, unet_out, secondary)
    assert on_pred.loss > 0 and on_pred.grad.abs().max() > 0

    # the gradient points to a brighter image: per sample, and a small step along it brightens CLIP's image
    assert (guided.grad.mean(dim=(1, 2, 3)) > 0).all()
    stepped = secondary_gradient(
        schedule, brighter, x_t + 0.5 * guided.grad / guided.grad.norm(), t, unet_out, secondary
    )
    assert stepped.loss < guided.loss
