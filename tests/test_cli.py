"""The command line: what a user types, what they see, what lands on disk."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys

import numpy as np
import pytest
from helpers import pixels, run_cli, write_picture
from PIL import Image

from dreamcanvas.engine import generate
from dreamcanvas.outputs import png, rundir
from dreamcanvas.records import flag_of
from dreamcanvas.settings import GenerateSettings


def tiny_args(clip_spec: str, *extra) -> list[str]:
    return [
        "generate",
        "a red apple",
        "--clip",
        clip_spec,
        "--size",
        "32",
        "32",
        "--cutn",
        "4",
        "-i",
        "6",
        "--save-every",
        "3",
        "--seed",
        "3",
        "--quiet",
        *extra,
    ]


def test_generate_writes_a_run_folder_and_prints_the_picture_path(tmp_path, capsys, tiny_clip_spec):
    code, out, err = run_cli([*tiny_args(tiny_clip_spec, "--video", "--gif"), "--out", tmp_path / "run"], capsys)
    assert code == 0, err
    assert out.strip() == str(tmp_path / "run" / rundir.FINAL_NAME)
    names = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert names == ["final.png", "frames", "run.json", "state.pt", "video.gif", "video.mp4"]
    assert err == ""


def test_default_run_folder_is_dated_and_never_reused(tmp_path, capsys, monkeypatch, tiny_clip_spec):
    monkeypatch.chdir(tmp_path)
    run_cli(tiny_args(tiny_clip_spec), capsys)
    run_cli(tiny_args(tiny_clip_spec), capsys)
    runs = sorted(p.name for p in (tmp_path / "outputs").iterdir())
    assert len(runs) == 2 and runs[0].endswith("a-red-apple") and runs[1].endswith("a-red-apple-2")


def test_progress_bar_shows_percent_and_the_seed(tmp_path, capsys, tiny_clip_spec):
    args = [a for a in tiny_args(tiny_clip_spec) if a != "--quiet"]
    code, _, err = run_cli([*args, "--out", tmp_path / "run"], capsys)
    assert code == 0
    assert "seed: 3" in err and "100%" in err and "loss" in err


def test_from_png_remakes_the_picture_and_flags_override(tmp_path, capsys, tiny_clip_spec):
    run_cli([*tiny_args(tiny_clip_spec), "--out", tmp_path / "a"], capsys)
    original = tmp_path / "a" / rundir.FINAL_NAME
    code, _, err = run_cli(["generate", "--from", original, "--out", tmp_path / "b", "--quiet"], capsys)
    assert code == 0, err
    assert np.array_equal(pixels(original), pixels(tmp_path / "b" / rundir.FINAL_NAME))

    run_cli(["generate", "--from", original, "--out", tmp_path / "c", "-i", "8", "--quiet"], capsys)
    remade = png.read_metadata(tmp_path / "c" / rundir.FINAL_NAME)["settings"]
    assert remade["iterations"] == 8 and remade["seed"] == 3 and remade["prompts"] == ["a red apple"]


def test_resume_command_finishes_a_stopped_run(tmp_path, capsys, tiny_clip_spec):
    settings = GenerateSettings(
        prompts=["a red apple"],
        clip_models=[tiny_clip_spec],
        width=32,
        height=32,
        cutn=4,
        iterations=12,
        save_every=4,
        seed=5,
    )
    straight = generate(settings, tmp_path / "straight")

    def ctrl_c(report):
        if report.step == 6:
            raise KeyboardInterrupt

    generate(settings, tmp_path / "stopped", on_step=ctrl_c)
    code, out, err = run_cli(["resume", tmp_path / "stopped", "--quiet"], capsys)
    assert code == 0, err
    assert out.strip() == str(tmp_path / "stopped" / rundir.FINAL_NAME)
    assert (tmp_path / "stopped" / rundir.FINAL_NAME).read_bytes() == straight.image_path.read_bytes()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--generator", "crayon"], "unknown generator 'crayon'"),
        (["--clip", "NoSuchNet:nothing"], "NoSuchNet"),
        (["--prompt", "apple:abc"], "weight 'abc'"),
        (["--image-prompt", "{tmp}/missing.png"], "no such image"),
        (["--init-image", "{tmp}/not-a-picture.png"], "cannot read image"),
        (["--image-prompt", "{tmp}/truncated.png"], "cannot read image"),  # header fine, data cut off
        (["--size", "0", "32"], "--size must be an integer >= 1"),
        (["-i", "0"], "--iterations must be an integer >= 1"),
        (["--cutn", "-3"], "--cutn must be an integer >= 1"),
        (["--optimizer", "lbfgsx"], "--optimizer must be one of adam, adamw, sgd"),
        (["--augs", "flip,swirl"], "--augs must be one of flip, affine, perspective, jitter, sharpness, erasing, "
                                   "noise; got 'swirl'"),
        (["--size", "32"], "--size"),
    ],
)
def test_bad_input_is_one_clear_line_and_nothing_is_written(
    tmp_path, capsys, monkeypatch, tiny_clip_spec, flags, message
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "not-a-picture.png").write_text("this is text")
    Image.new("RGB", (64, 64), "red").save(tmp_path / "whole.png")
    whole = (tmp_path / "whole.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(whole[: len(whole) // 2])
    args = tiny_args(tiny_clip_spec) + [f.format(tmp=tmp_path) for f in flags]
    code, out, err = run_cli([*args, "--out", tmp_path / "run"], capsys)
    assert code != 0 and out == ""
    assert message in err
    assert err.count("\n") == 1 and err.startswith("dreamcanvas: error:")
    assert "Traceback" not in err
    assert not (tmp_path / "run").exists() and not (tmp_path / "outputs").exists()


def test_existing_out_is_refused_and_left_untouched(tmp_path, capsys, tiny_clip_spec):
    existing = tmp_path / "run"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    code, _, err = run_cli([*tiny_args(tiny_clip_spec), "--out", existing], capsys)
    assert code != 0 and "already exists" in err and err.count("\n") == 1
    assert [p.name for p in existing.iterdir()] == ["keep.txt"]


def test_from_a_png_without_settings_is_a_clear_error(tmp_path, capsys):
    plain = write_picture(tmp_path / "plain.png", (1, 2, 3))
    code, _, err = run_cli(["generate", "--from", plain], capsys)
    assert code != 0 and "carries no dreamcanvas settings" in err and err.count("\n") == 1


def test_every_setting_has_a_documented_flag(capsys):
    code, out, _ = run_cli(["generate", "--help"], capsys)
    assert code == 0
    help_text = " ".join(out.split())
    for field in dataclasses.fields(GenerateSettings):
        flag = flag_of(field)
        flag = "--prompt" if flag == "the prompt" else flag
        assert flag in help_text, f"{field.name} has no flag in --help"


def test_the_installed_command_reports_errors_without_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "dreamcanvas", "generate", "x", "--generator", "crayon", "--out", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dreamcanvas: error: unknown generator 'crayon'")
    assert not (tmp_path / "r").exists()


@pytest.fixture
def offline_with_bundled_guide(tmp_path, monkeypatch, tiny_clip_dir):
    """An empty HF cache, no network, and a (tiny) bundled guide in the package."""
    from dreamcanvas import weights

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    bundled = tmp_path / "bundled"
    shutil.copytree(tiny_clip_dir, bundled / "guide")
    monkeypatch.setattr(weights.registry, "bundled_dir", lambda name: bundled / name)
    return bundled


def no_clip_args(*extra) -> list[str]:
    return ["generate", "a red apple", "--size", "32", "32", "--cutn", "4", "-i", "3", "--seed", "1", "--quiet", *extra]


def test_offline_without_clip_draws_with_the_bundled_guide_and_says_so_once(
    tmp_path, capsys, offline_with_bundled_guide
):
    code, out, err = run_cli([*no_clip_args(), "--out", tmp_path / "run"], capsys)
    assert code == 0, err
    assert out.strip() == str(tmp_path / "run" / rundir.FINAL_NAME)
    warnings = err.strip().splitlines()
    assert len(warnings) == 1 and warnings[0].startswith("dreamcanvas: warning:")
    assert "bundled:guide" in warnings[0] and "dreamcanvas models download ViT-B-32:openai" in warnings[0]
    assert png.read_metadata(tmp_path / "run" / rundir.FINAL_NAME)["settings"]["clip_models"] == ["bundled:guide"]


def test_an_explicit_clip_never_falls_back(tmp_path, capsys, offline_with_bundled_guide):
    code, _, err = run_cli([*no_clip_args("--clip", "ViT-B-32:openai"), "--out", tmp_path / "run"], capsys)
    assert code != 0 and err.count("\n") == 1
    assert "dreamcanvas models download ViT-B-32:openai" in err and "bundled" not in err
    assert not (tmp_path / "run").exists()


def test_offline_without_a_bundled_guide_is_the_download_error(tmp_path, capsys, monkeypatch):
    from dreamcanvas import weights

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(weights.registry, "bundled_dir", lambda name: tmp_path / "nothing" / name)
    code, _, err = run_cli([*no_clip_args(), "--out", tmp_path / "run"], capsys)
    assert code != 0 and "dreamcanvas models download ViT-B-32:openai" in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_ctrl_c_of_an_endless_run_is_a_normal_end_but_of_a_finite_run_exit_130(
    tmp_path, capsys, monkeypatch, tiny_clip_spec
):
    from dreamcanvas import engine

    real_optimise = engine.optimise

    def interrupted(job, run, state, on_step=None):
        def stop_at_three(report):
            if report.step == 3:
                raise KeyboardInterrupt

        return real_optimise(job, run, state, stop_at_three)

    monkeypatch.setattr(engine, "optimise", interrupted)
    code, out, err = run_cli([*tiny_args(tiny_clip_spec), "-i", "-1", "--out", tmp_path / "endless"], capsys)
    assert code == 0 and "stopped at step 3" in err and out.strip().endswith("final.png")
    code, _, err = run_cli([*tiny_args(tiny_clip_spec), "--out", tmp_path / "finite"], capsys)
    assert code == 130 and f"dreamcanvas resume {tmp_path / 'finite'}" in err
