"""``--upscale`` as the last step of ``generate`` and ``sd``: the picture written beside the run's own.

The upscalers are random networks of spandrel's architectures saved as Real-ESRGAN saves them (``local:``); the
drawing models are the tiny random CLIP and diffusers pipeline the other tests use. Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import one_error_line, random_compact, random_rrdbnet, run_cli, tree
from PIL import Image
from sd_tiny import make_tiny_pipeline

from dreamcanvas.engine import generate
from dreamcanvas.outputs import png, rundir
from dreamcanvas.settings import GenerateSettings


@pytest.fixture(scope="module")
def upscalers(tmp_path_factory: pytest.TempPathFactory) -> dict[int, str]:
    folder = tmp_path_factory.mktemp("upscalers")
    return {4: f"local:{random_rrdbnet(folder / 'x4.pth', 4)}", 2: f"local:{random_compact(folder / 'x2.pth', 2)}"}


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_pipeline(tmp_path_factory.mktemp("sd") / "tiny-sd")


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("DREAMCANVAS_CACHE", str(tmp_path_factory.getbasetemp() / "upscale-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def generate_args(clip_spec: str, out: Path, *extra) -> list:
    return ["generate", "a red apple", "--clip", clip_spec, "--size", "24", "16", "--cutn", "2", "-i", "4",
            "--save-every", "2", "--seed", "3", "--quiet", "--out", out, *extra]  # fmt: skip


def sd_args(model_dir: Path, out: Path, *extra) -> list:
    return ["sd", "a red apple", "--model", f"local:{model_dir}", "--preview", "none", "--size", "32", "16",
            "--steps", "2", "--seed", "7", "--precision", "fp32", "-q", "--out", out, *extra]  # fmt: skip


def printed(capsys, args: list) -> list[Path]:
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    return [Path(line) for line in out.split()]


def test_generate_upscale_writes_what_the_upscale_command_makes_of_the_final_picture(
    capsys, tmp_path, tiny_clip_spec, upscalers
):
    final, upscaled = printed(capsys, generate_args(tiny_clip_spec, tmp_path / "run", "--upscale", "4",
                                                    "--upscale-model", upscalers[4]))  # fmt: skip
    assert (final.name, upscaled.name) == (rundir.FINAL_NAME, "final-x4.png")
    with Image.open(upscaled) as picture:
        assert picture.size == (96, 64)
    [plain] = printed(capsys, generate_args(tiny_clip_spec, tmp_path / "plain"))
    assert Image.open(final).tobytes() == Image.open(plain).tobytes()  # the drawing is untouched by the last step

    [alone] = printed(capsys, ["upscale", final, "--model", upscalers[4], "--precision", "auto", "-q",
                               "--out", tmp_path / "alone"])  # fmt: skip
    assert Image.open(alone).tobytes() == Image.open(upscaled).tobytes()
    stored = png.read_metadata(upscaled, "generate")
    assert stored == png.read_metadata(final, "generate")
    assert (stored["settings"]["upscale"], stored["settings"]["upscale_model"]) == (4, upscalers[4])


def test_a_stopped_generate_run_is_not_upscaled_until_it_is_finished(capsys, tmp_path, tiny_clip_spec, upscalers):
    settings = GenerateSettings(prompts=["a red apple"], clip_models=[tiny_clip_spec], width=24, height=16, cutn=2,
                                iterations=4, save_every=2, seed=3, upscale=2, upscale_model=upscalers[2])  # fmt: skip

    def stop_at_two(report) -> None:
        if report.step == 2:
            raise KeyboardInterrupt

    stopped = generate(settings, tmp_path / "run", on_step=stop_at_two)
    assert not stopped.completed and stopped.upscaled_path is None
    assert not (tmp_path / "run" / "final-x2.png").exists()
    _, upscaled = printed(capsys, ["resume", tmp_path / "run", "--quiet"])
    assert upscaled == tmp_path / "run" / "final-x2.png"
    straight = generate(settings, tmp_path / "straight")
    assert upscaled.read_bytes() == straight.upscaled_path.read_bytes()


def test_sd_upscale_writes_each_picture_of_a_batch_upscaled_with_its_own_seed(capsys, tmp_path, tiny_sd, upscalers):
    paths = printed(capsys, sd_args(tiny_sd, tmp_path / "run", "--batch", "2", "--upscale", "2",
                                    "--upscale-model", upscalers[2]))  # fmt: skip
    assert [path.name for path in paths] == ["final-1.png", "final-2.png", "final-1-x2.png", "final-2-x2.png"]
    for picture, upscaled in zip(paths[:2], paths[2:], strict=True):
        with Image.open(upscaled) as big:
            assert big.size == (64, 32)
        assert png.read_metadata(upscaled, "sd") == png.read_metadata(picture, "sd")
        assert png.read_text_chunk(upscaled, "parameters") == png.read_text_chunk(picture, "parameters")
    assert png.read_metadata(paths[3], "sd")["settings"]["seed"] == 8
    stored = rundir.read_run_json(tmp_path / "run")
    assert stored["upscaled"] == ["final-1-x2.png", "final-2-x2.png"]


@pytest.mark.parametrize("command", ["generate", "sd"])
@pytest.mark.parametrize(("extra", "words"), [
    (("--upscale", "3"), "--upscale must be one of 0, 2, 4"),
    (("--upscale", "4", "--upscale-model", "local:{x2}"), "upscales 2x, not 4x"),
    (("--upscale", "2", "--upscale-model", "local:{tmp}/missing.pth"), "missing.pth"),
])  # fmt: skip
def test_a_bad_upscale_is_one_line_before_anything_is_written(
    capsys, tmp_path, tiny_clip_spec, tiny_sd, upscalers, command, extra, words
):
    extra = [part.format(tmp=tmp_path, x2=upscalers[2].removeprefix("local:")) for part in extra]
    args = generate_args(tiny_clip_spec, tmp_path / "run", *extra) if command == "generate" else sd_args(
        tiny_sd, tmp_path / "run", *extra)  # fmt: skip
    before = tree(tmp_path)
    code, out, err = run_cli(args, capsys)
    assert words in one_error_line(code, err) and out == ""
    assert tree(tmp_path) == before
