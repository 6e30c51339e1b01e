"""The memory estimate refuses runs that cannot fit, from the settings alone, before anything is loaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.memory import (
    SAFETY,
    MemoryEstimate,
    available_memory,
    check_fits,
    clip_shape,
    estimate_generate,
    estimate_train_clip,
    estimate_train_vqgan,
    total_memory,
    vqgan_parameters,
    vqgan_shape,
)
from dreamcanvas.settings import GenerateSettings
from dreamcanvas.training.clip import TrainOptions
from dreamcanvas.training.vqgan import TrainVQGANConfig

GIB = 1024**3


def settings(**changes) -> GenerateSettings:
    return GenerateSettings(prompts=["a lighthouse in a storm"], **changes)


def total(**changes) -> int:
    return estimate_generate(settings(**changes)).total_bytes


def refusal(estimate: MemoryEstimate, available: int | None = None) -> str:
    with pytest.raises(DreamcanvasError) as raised:
        check_fits(estimate, available=available)
    return str(raised.value)


def test_a_huge_picture_is_refused_in_one_line_naming_estimate_memory_and_the_way_out() -> None:
    estimate = estimate_generate(settings(width=100_000, height=100_000))
    assert estimate.total_bytes > 24 * GIB
    available = available_memory()  # this machine's, read once: it moves a little from one reading to the next
    message = refusal(estimate, available)
    assert "\n" not in message
    assert f"about {estimate.total_bytes / 1e9:.1f} GB" in message
    assert f"but {available / 1e9:.1f} GB are available" in message
    assert "picture 100000x100000, 32 cutouts, 1 CLIP model" in message
    assert "--size" in message and "--cutn" in message and "--force" in message


def test_a_huge_cutout_count_is_refused() -> None:
    estimate = estimate_generate(settings(cutn=100_000))
    assert estimate.total_bytes > 24 * GIB
    message = refusal(estimate, available=16 * GIB)
    assert "100000 cutouts" in message and "17.2 GB are available" in message and "--force" in message


def test_the_default_run_is_small_and_fits_here() -> None:
    estimate = estimate_generate(settings())
    assert estimate.total_bytes < 4e9
    assert estimate.summary == "picture 256x256, 32 cutouts, 1 CLIP model"
    assert estimate.total_bytes == sum(estimate.parts.values())
    assert {"runtime", "clip weights", "clip activations", "cutouts", "generator"} <= set(estimate.parts)
    check_fits(estimate)


def test_force_never_refuses() -> None:
    check_fits(estimate_generate(settings(width=100_000, height=100_000)), force=True, available=1)


def test_the_safety_margin_is_the_limit() -> None:
    estimate = MemoryEstimate(900, {"runtime": 900}, "a test")
    check_fits(estimate, available=int(900 / SAFETY) + 1)
    assert "a test" in refusal(estimate, available=int(900 / SAFETY) - 10)


def test_the_estimate_grows_with_the_picture_the_cutouts_and_the_models() -> None:
    for generator in ("pixel", "fourier", "vqgan"):
        sizes = [total(generator=generator, width=side, height=side) for side in (128, 512, 2048)]
        assert sizes == sorted(sizes) and sizes[0] < sizes[-1], generator
        wide = total(generator=generator, width=2048, height=256)
        assert total(generator=generator, width=256, height=256) < wide < sizes[-1]
    cutouts = [total(cutn=cutn) for cutn in (1, 8, 32, 64, 128, 1024)]
    assert cutouts == sorted(cutouts)  # few cutouts: reading the weights file may be the peak
    assert len(set(cutouts[2:])) == 4
    one, two = total(clip_models=["ViT-B-32:openai"]), total(clip_models=["ViT-B-32:openai", "ViT-B-16:openai"])
    three = total(clip_models=["ViT-B-32:openai", "ViT-B-16:openai", "RN50:openai"])
    assert one < two < three
    assert "3 CLIP models" in estimate_generate(settings(clip_models=["RN50:openai"] * 3)).summary


def test_larger_architectures_need_more() -> None:
    small, base, large = (total(clip_models=[spec]) for spec in ("bundled:guide", "ViT-B-32:openai", "ViT-L-14:openai"))
    assert small < base < large


def test_the_default_clip_and_unknown_models_count_as_vit_b_32() -> None:
    default = estimate_generate(settings(clip_models=[]))
    assert default.total_bytes == total(clip_models=["ViT-B-32:openai"])
    for odd in ("no-such-arch:nothing", "hf-hub:nobody/nothing", "local-dir:/no/such/folder", "", "bundled:none"):
        estimate = estimate_generate(settings(clip_models=[odd]))
        assert estimate.total_bytes == default.total_bytes, odd
    assert estimate_generate(settings(generator="vqgan", vqgan_model="no-such-vqgan")).total_bytes > 0
    assert estimate_generate(settings(generator="vqgan", vqgan_model="local:/no/such/folder")).total_bytes > 0


def test_a_local_model_is_read_from_its_config(tiny_clip_dir: Path, tiny_clip_spec: str) -> None:
    import torch

    from dreamcanvas.perceptor.clip import load_perceptor

    shape = clip_shape(tiny_clip_spec)
    assert shape.image_size == 32
    assert shape.parameters == sum(p.numel() for p in load_perceptor(tiny_clip_spec).model.parameters())
    assert shape.checkpoint_bytes == (tiny_clip_dir / "open_clip_model.safetensors").stat().st_size
    assert total(clip_models=[tiny_clip_spec]) < total(clip_models=["bundled:guide"])
    del torch


def test_parameter_counts_follow_the_real_architectures() -> None:
    import open_clip
    import torch

    from dreamcanvas.models.vqgan import VQGAN, read_config

    with torch.device("meta"):
        for arch in ("ViT-B-32", "ViT-L-14", "RN50"):
            real = sum(p.numel() for p in open_clip.model.CLIP(**open_clip.get_model_config(arch)).parameters())
            assert clip_shape(f"{arch}:openai").parameters == pytest.approx(real, rel=0.002), arch
        config, _ = read_config(Path(__file__).parents[1] / "src/dreamcanvas/bundled/vqgan/model.yaml")
        real = sum(p.numel() for p in VQGAN(config).parameters())
    assert vqgan_parameters(config.ddconfig, config.n_embed, config.embed_dim) == real


def test_vqgan_sizes_round_down_to_its_factor() -> None:
    assert vqgan_shape("bundled:vqgan").factor == 8
    estimate = estimate_generate(settings(generator="vqgan", vqgan_model="bundled:vqgan", width=250, height=130))
    assert estimate.summary.startswith("picture 248x128,")
    assert {"vqgan weights", "vqgan decoder"} <= set(estimate.parts)


def test_image_prompts_and_init_pictures_add_to_the_estimate(tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "prompt.png"
    Image.new("RGB", (640, 480), (200, 10, 10)).save(path)
    plain = total()
    with_prompt = total(image_prompts=[f"{path}:0.5"])
    assert plain < with_prompt < total(image_prompts=[str(path)], init_image=str(path))
    assert total(image_prompts=["/no/such/picture.png"]) > plain


def test_available_memory_is_positive_and_at_most_the_ram() -> None:
    available = available_memory()
    assert 0 < available <= total_memory()


def test_the_clip_trainer_estimate_grows_with_pictures_and_batch(tmp_path: Path) -> None:
    def clip_total(pictures: int, **changes) -> int:
        options = TrainOptions(tmp_path, tmp_path / "out", **changes)
        return estimate_train_clip(options, pictures).total_bytes

    assert clip_total(100) < clip_total(10_000) < clip_total(1_000_000)
    assert clip_total(100, batch_size=8) < clip_total(100, batch_size=128) < clip_total(100, batch_size=4096)
    assert clip_total(100, config="tiny") < clip_total(100, config="small")
    assert clip_total(100, config="no-such-config") > 0 and clip_total(100, init="local-dir:/nothing") > 0
    options = TrainOptions(tmp_path, tmp_path / "out", config="tiny", batch_size=8)
    assert estimate_train_clip(options, 50).summary == "50 pictures at 32x32, batch 8, 1.7 M parameters"
    huge = estimate_train_clip(TrainOptions(tmp_path, tmp_path / "out"), 100_000_000)
    assert "--batch-size" in refusal(huge, available=8 * GIB)


def test_the_vqgan_trainer_estimate_grows_with_pictures_batch_and_size(tmp_path: Path) -> None:
    def vqgan_total(pictures: int, **changes) -> int:
        return estimate_train_vqgan(TrainVQGANConfig(tmp_path, tmp_path / "out", **changes), pictures).total_bytes

    assert vqgan_total(100) < vqgan_total(10_000) < vqgan_total(1_000_000)
    assert vqgan_total(100, batch_size=2) < vqgan_total(100, batch_size=8) < vqgan_total(100, batch_size=64)
    assert vqgan_total(100, size=64) < vqgan_total(100, size=256)
    assert vqgan_total(100, ch=64) < vqgan_total(100, ch=128)
    huge = estimate_train_vqgan(TrainVQGANConfig(tmp_path, tmp_path / "out", size=4096, batch_size=64), 10)
    message = refusal(huge, available=8 * GIB)
    assert "10 pictures at 4096 px, batch 64" in message and "--size" in message and "--force" in message


def test_a_cgroup_limit_below_the_free_memory_is_what_counts(tmp_path: Path) -> None:
    from dreamcanvas.memory.system import _cgroup_headroom

    def cgroup(folder: Path, files: dict[str, str]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (folder / name).write_text(text)

    root = tmp_path / "sys-fs-cgroup"
    # v2: a limited job inside an unlimited slice; its inactive page cache counts as free
    cgroup(root / "slice", {"memory.max": "max\n", "memory.current": str(9 * GIB)})
    cgroup(root / "slice/job", {"memory.max": str(8 * GIB), "memory.current": str(3 * GIB),
                                "memory.stat": f"anon 100\ninactive_file {GIB}\n"})  # fmt: skip
    # v1: the memory controller mounted apart, the limit one level up
    cgroup(root / "memory/box", {"memory.limit_in_bytes": str(4 * GIB), "memory.usage_in_bytes": str(GIB),
                                 "memory.stat": "total_inactive_file 0\n"})  # fmt: skip
    cgroup(root / "memory/box/inner", {"memory.limit_in_bytes": str(2**63 - 4096), "memory.usage_in_bytes": "0"})
    listing = tmp_path / "cgroup"
    listing.write_text("0::/slice/job\n")
    assert _cgroup_headroom(listing, root) == [6 * GIB]
    listing.write_text("7:memory:/box/inner\n3:cpu,cpuacct:/box/inner\n")
    assert _cgroup_headroom(listing, root) == [3 * GIB]
    listing.write_text("0::/not/there\n")
    assert _cgroup_headroom(listing, root) == []
    assert _cgroup_headroom(tmp_path / "missing", root) == []
