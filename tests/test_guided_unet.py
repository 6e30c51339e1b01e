"""Our guided-diffusion UNet against fixtures made by running OpenAI's original code.

The files in ``tests/data`` were made once, outside this repository, with ``guided_diffusion`` from
openai/guided-diffusion at commit 22e0df8 (``create_model`` on the meta device for the names, on the CPU for the
output): ``guided_unet_256_keys.json`` and ``guided_unet_64_keys.json`` hold the sorted ``[name, shape]`` pairs of
the original's state dict, ``guided_unet_64_reference.json`` the original's output for seeded weights and input
(the recipe is written inside it and repeated by :func:`seeded_weights`). They are data, not code.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import ShellPayload

from dreamcanvas.errors import DreamcanvasError, DreamcanvasWarning
from dreamcanvas.files.checkpoints import UnsafeCheckpointError
from dreamcanvas.models.guided_unet import (
    FLAGS_FILE,
    KNOWN_FLAGS,
    Float32GroupNorm,
    GuidedUNet,
    UNetFlags,
    build_unet,
    infer_flags,
    load_unet,
)

DATA = Path(__file__).parent / "data"

# A tiny model in the original's flag vocabulary, sampler keys included (they must be ignored).
TINY_FLAGS = {
    "image_size": 32,
    "num_channels": 32,
    "num_res_blocks": 1,
    "channel_mult": "1,2",
    "attention_resolutions": "16",
    "num_head_channels": 32,
    "learn_sigma": True,
    "resblock_updown": True,
    "use_scale_shift_norm": True,
    "diffusion_steps": 1000,
    "noise_schedule": "linear",
    "timestep_respacing": "25",
}


def names_and_shapes(model: torch.nn.Module) -> list[list]:
    return sorted([key, list(value.shape)] for key, value in model.state_dict().items())


def on_meta(flags: UNetFlags) -> GuidedUNet:
    with torch.device("meta"):
        return build_unet(flags)


def seeded_weights(model: torch.nn.Module, seed: int = 0, std: float = 0.05) -> dict[str, torch.Tensor]:
    """The fixture's recipe: sorted names, one generator, ``randn(shape) * std`` each (zero-init layers too)."""
    generator = torch.Generator().manual_seed(seed)
    return {key: torch.randn(shape, generator=generator) * std for key, shape in names_and_shapes(model)}


def seeded_model(flags: UNetFlags, seed: int = 0) -> GuidedUNet:
    model = on_meta(flags)
    model.load_state_dict(seeded_weights(model, seed), strict=True, assign=True)
    return model.eval()


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert message and "\n" not in message
    return message


def save_tiny(folder: Path, with_flags: bool = True) -> tuple[Path, GuidedUNet]:
    model = seeded_model(UNetFlags.from_dict(TINY_FLAGS), seed=3)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tiny.pt"
    torch.save(model.state_dict(), path)
    if with_flags:
        (folder / FLAGS_FILE).write_text(json.dumps(TINY_FLAGS))
    return path, model


def tiny_input(batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(5)) * 2 - 1
    return x, torch.linspace(0.0, 999.0, batch)


# -------------------------------------------------------------------------------------------------------
# the released architectures, on the meta device


@pytest.mark.parametrize(
    ("name", "parameters", "tensors"),
    [("256x256_diffusion_uncond", 552_814_086, 566), ("512x512_diffusion_uncond_finetune_008100", 557_973_638, 644)],
)
def test_released_models_have_the_original_sizes(name: str, parameters: int, tensors: int) -> None:
    state = on_meta(KNOWN_FLAGS[name]).state_dict()
    assert sum(value.numel() for value in state.values()) == parameters
    assert len(state) == tensors


def test_256_names_and_shapes_are_the_originals() -> None:
    expected = json.loads((DATA / "guided_unet_256_keys.json").read_text())
    assert names_and_shapes(on_meta(KNOWN_FLAGS["256x256_diffusion_uncond"])) == expected


@pytest.mark.parametrize("name", sorted(KNOWN_FLAGS))
def test_known_models_are_recognised_from_their_weights(name: str) -> None:
    assert infer_flags(on_meta(KNOWN_FLAGS[name]).state_dict()) == KNOWN_FLAGS[name]


# -------------------------------------------------------------------------------------------------------
# the computation, against the original's output


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads((DATA / "guided_unet_64_reference.json").read_text())


def test_64px_names_shapes_and_output_are_the_originals(reference: dict) -> None:
    flags = UNetFlags.from_dict(reference["flags"])
    model = seeded_model(flags, seed=reference["weight_seed"])
    assert names_and_shapes(model) == json.loads((DATA / "guided_unet_64_keys.json").read_text())

    x = torch.rand(reference["input_shape"], generator=torch.Generator().manual_seed(reference["input_seed"])) * 2 - 1
    with torch.no_grad():
        out = model(x, torch.tensor(reference["timesteps"]))
    assert list(out.shape) == reference["output_shape"]
    close = {"rtol": 1e-4, "atol": 1e-6}
    torch.testing.assert_close(F.avg_pool2d(out, 8), torch.tensor(reference["output_avg_pool_8"]), **close)
    torch.testing.assert_close(out.flatten()[:64], torch.tensor(reference["output_first_64"]), **close)
    assert out.mean().item() == pytest.approx(reference["output_mean"], rel=1e-4)
    assert out.std().item() == pytest.approx(reference["output_std"], rel=1e-4)


def test_channels_last_bf16_and_timestep_types_compute_the_same() -> None:
    model = seeded_model(UNetFlags.from_dict(TINY_FLAGS))
    x, steps = tiny_input()
    with torch.no_grad():
        expected = model(x, steps)
        as_floats, as_ints = model(x, steps.round()), model(x, steps.round().long())
        shared = model(x[:1], float(steps[0]))
        model.to(memory_format=torch.channels_last)
        channels_last = model(x.to(memory_format=torch.channels_last), steps)
        model.to(torch.bfloat16)
        bf16 = model(x, steps)
    assert expected.shape == (2, 6, 32, 32)
    scale = expected.abs().max()
    torch.testing.assert_close(as_ints, as_floats, rtol=0, atol=0)
    torch.testing.assert_close(shared, expected[:1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(channels_last, expected, rtol=1e-4, atol=1e-5 * scale)
    assert bf16.dtype == torch.float32
    assert (bf16 - expected).abs().max() < 0.05 * scale


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_bf16_norm_keeps_float32_statistics(memory_format: torch.memory_format) -> None:
    """The bf16 model's norms skip the float32 copies; their output is still the float32 computation's, rounded."""
    torch.manual_seed(0)
    norm = Float32GroupNorm(128)
    with torch.no_grad():
        norm.weight.normal_(), norm.bias.normal_()
    norm.to(torch.bfloat16)
    x = (torch.randn(2, 128, 17, 9) * 3 + 1).to(torch.bfloat16).contiguous(memory_format=memory_format)
    expected = F.group_norm(x.float(), 32, norm.weight.float(), norm.bias.float(), norm.eps).to(torch.bfloat16)
    out = norm(x)
    one_bf16_step = expected.float().abs().clamp(min=1e-3) * 2**-7
    assert out.dtype == torch.bfloat16
    assert ((out.float() - expected.float()).abs() <= one_bf16_step).all()


def test_gradients_reach_the_image() -> None:
    """CLIP guidance differentiates through the network with respect to its input."""
    model = seeded_model(UNetFlags.from_dict(TINY_FLAGS))
    x, steps = tiny_input()
    x.requires_grad_()
    model(x, steps)[:, :3].square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


# -------------------------------------------------------------------------------------------------------
# flags


def test_flags_take_the_originals_keys_and_refuse_unknown_ones() -> None:
    flags = UNetFlags.from_dict(TINY_FLAGS)
    assert (flags.num_channels, flags.channel_multipliers(), flags.attention_rates()) == (32, (1.0, 2.0), {2})
    assert UNetFlags.from_dict(flags.to_dict()) == flags
    assert UNetFlags.from_dict({"image_size": 512, "attention_resolutions": "32, 16, 8"}).attention_rates() == {
        16,
        32,
        64,
    }
    with pytest.raises(DreamcanvasError) as error:
        UNetFlags.from_dict({**TINY_FLAGS, "num_chanels": 64})
    assert "num_chanels" in one_line(error) and "num_channels" in one_line(error)
    with pytest.raises(DreamcanvasError) as error:
        UNetFlags.from_dict({"learn_sigma": "yes"})
    assert "learn_sigma" in one_line(error)
    with pytest.raises(DreamcanvasError) as error:
        UNetFlags.from_dict({"image_size": 96})
    assert "channel_mult" in one_line(error)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"resblock_updown": False},
        {"use_scale_shift_norm": False, "learn_sigma": False},
        {"class_cond": True, "num_res_blocks": 2},
        {"num_res_blocks": 0, "channel_mult": "1,2,2", "attention_resolutions": "8,4"},
        {"image_size": 64, "num_channels": 64, "channel_mult": "0.5,1,2", "attention_resolutions": ""},
    ],
)
def test_flags_inferred_from_weights_give_the_same_layout(changes: dict) -> None:
    flags = UNetFlags.from_dict({**TINY_FLAGS, **changes})
    inferred = infer_flags(on_meta(flags).state_dict())
    assert inferred.layout() == flags.layout()
    assert names_and_shapes(on_meta(inferred)) == names_and_shapes(on_meta(flags))


# -------------------------------------------------------------------------------------------------------
# loading files


def test_state_dict_with_flags_file_round_trips(tmp_path: Path) -> None:
    path, saved = save_tiny(tmp_path)
    loaded = load_unet(path)
    assert loaded.flags == UNetFlags.from_dict(TINY_FLAGS) and not loaded.training
    x, steps = tiny_input()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, steps), saved(x, steps), rtol=0, atol=0)


@pytest.mark.parametrize("value, predicts_xstart", [(None, False), (False, False), (True, True), ("yes", None)])
def test_the_process_flag_predict_xstart_is_read_from_the_flags_file(tmp_path: Path, value, predicts_xstart) -> None:
    path, _ = save_tiny(tmp_path)
    flags = {**TINY_FLAGS, "diffusion_steps": 1000} | ({} if value is None else {"predict_xstart": value})
    (tmp_path / FLAGS_FILE).write_text(json.dumps(flags))
    if predicts_xstart is None:
        with pytest.raises(DreamcanvasError, match="predict_xstart must be true or false") as error:
            load_unet(path)
        assert "\n" not in str(error.value)
    else:
        assert load_unet(path).predict_xstart is predicts_xstart


def test_state_dict_without_flags_loads_by_inference(tmp_path: Path) -> None:
    path, saved = save_tiny(tmp_path, with_flags=False)
    with pytest.warns(DreamcanvasWarning, match=FLAGS_FILE):
        loaded = load_unet(path)
    assert loaded.flags.layout() == saved.flags.layout()
    assert all(torch.equal(loaded.state_dict()[key], value) for key, value in saved.state_dict().items())


def test_safetensors_and_explicit_flags(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    saved = seeded_model(UNetFlags.from_dict(TINY_FLAGS), seed=4)
    path = tmp_path / "tiny.safetensors"
    save_file({key: value.contiguous() for key, value in saved.state_dict().items()}, path)
    loaded = load_unet(path, flags=UNetFlags.from_dict(TINY_FLAGS))
    assert all(torch.equal(loaded.state_dict()[key], value) for key, value in saved.state_dict().items())


def test_weights_of_another_architecture_give_one_line(tmp_path: Path) -> None:
    path, _ = save_tiny(tmp_path)
    (tmp_path / FLAGS_FILE).write_text(json.dumps({**TINY_FLAGS, "num_channels": 64}))
    with pytest.raises(DreamcanvasError) as error:
        load_unet(path)
    message = one_line(error)
    assert str(path) in message and "of another shape" in message and "time_embed.0.weight" in message

    other = tmp_path / "other" / "vae.pt"
    other.parent.mkdir()
    torch.save({"encoder.conv_in.weight": torch.zeros(8, 3, 3, 3)}, other)
    with pytest.raises(DreamcanvasError) as error:
        load_unet(other)
    assert "not a guided-diffusion UNet" in one_line(error)


def test_code_running_pickle_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    torch.save({"time_embed.0.weight": ShellPayload(marker)}, path)
    with pytest.raises(UnsafeCheckpointError) as error:
        load_unet(path)
    one_line(error)
    assert not marker.exists()
