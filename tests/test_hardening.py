"""One test per defect of the hardening issue: each failed on the main before it, and must keep passing.

What they share: a bad input, a crafted file or a hostile folder ends as exit code 2 (130 for a stop) with
exactly one line on stderr, no traceback, and nothing written or overwritten outside what the run owns.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import torch
from helpers import ShellPayload, one_error_line, run_cli, tiny_settings, tree
from PIL import Image

from dreamcanvas.engine import generate, resume
from dreamcanvas.outputs import png, rundir
from dreamcanvas.outputs.run import Run
from dreamcanvas.training.clip import STATE_NAME as CLIP_STATE_NAME


def tiny_generate_args(clip_spec: str, *extra) -> list[str]:
    return ["generate", "a red apple", "--clip", clip_spec, "--size", "32", "32", "--cutn", "2", "-i", "4",
            "--save-every", "2", "--seed", "3", "--quiet", *extra]  # fmt: skip


@pytest.fixture(scope="module")
def captioned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four captioned pictures: enough for `train clip` and `train vqgan` to start."""
    root = tmp_path_factory.mktemp("captioned")
    for _index, colour in enumerate(("red", "blue", "green", "yellow")):
        Image.new("RGB", (32, 32), colour).save(root / f"{colour}.png")
        (root / f"{colour}.txt").write_text(f"a {colour} square")
    return root


# --------------------------------------------------------------------------------------------- 1. code from files
def test_a_crafted_train_state_never_runs_code(captioned: Path, tmp_path: Path, capsys) -> None:
    marker, out = tmp_path / "PWNED", tmp_path / "run"
    out.mkdir()
    torch.save({"options": ShellPayload(marker)}, out / CLIP_STATE_NAME)
    code, _, err = run_cli(["train", "clip", captioned, "--out", out, "--resume", "--config", "tiny", "-q"], capsys)
    assert "refused to load" in one_error_line(code, err) and "could run code" in err
    assert not marker.exists()


def test_a_crafted_run_checkpoint_never_runs_code(tiny_clip_spec: str, tmp_path: Path, capsys) -> None:
    run = generate(tiny_settings(tiny_clip_spec, iterations=4, save_every=2), tmp_path / "run").run_dir
    marker = tmp_path / "PWNED"
    torch.save({"step": 2, "generator": ShellPayload(marker)}, run / rundir.STATE_NAME)
    code, _, err = run_cli(["resume", run, "-q"], capsys)
    assert "refused to load" in one_error_line(code, err)
    assert not marker.exists()


def test_a_crafted_vqgan_train_state_never_runs_code(captioned: Path, tmp_path: Path, capsys) -> None:
    from dreamcanvas.training.vqgan import STATE_NAME

    marker, out = tmp_path / "PWNED", tmp_path / "vq"
    out.mkdir()
    torch.save({"options": ShellPayload(marker), "run": {}, "data_fingerprint": ""}, out / STATE_NAME)
    code, _, err = run_cli(["train", "vqgan", captioned, "--out", out, "--resume", "--size", "32", "-q"], capsys)
    assert "refused to load" in one_error_line(code, err)
    assert not marker.exists()


# --------------------------------------------------------------------------------------------- 2. memory
@pytest.mark.parametrize("flags", [["--size", "100000", "100000"], ["--cutn", "100000"]])
def test_a_run_that_cannot_fit_in_memory_is_refused_before_loading(
    tiny_clip_spec: str, tmp_path: Path, capsys, monkeypatch, flags
) -> None:
    monkeypatch.chdir(tmp_path)
    import dreamcanvas.perceptor.clip as clip

    def never(*args, **kwargs):
        raise AssertionError("a model was loaded before the memory check")

    monkeypatch.setattr(clip, "load_perceptor", never)
    code, _, err = run_cli([*tiny_generate_args(tiny_clip_spec, *flags), "--out", tmp_path / "run"], capsys)
    assert "memory" in one_error_line(code, err) and "available" in err and "--force" in err
    assert tree(tmp_path) == {}


def test_a_refused_run_prints_one_line_even_with_the_progress_bar_on(tiny_clip_spec: str, tmp_path: Path, capsys,
                                                                      monkeypatch) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    args = tiny_generate_args(tiny_clip_spec, "--size", "100000", "100000")
    args.remove("--quiet")
    code, _, err = run_cli([*args, "--out", "run"], capsys)
    assert "memory" in one_error_line(code, err) and "seed:" not in err
    run = generate(tiny_settings(tiny_clip_spec, iterations=2, save_every=2), tmp_path / "done").run_dir
    (run / rundir.RUN_JSON).write_text("{")
    code, _, err = run_cli(["resume", run], capsys)
    assert "damaged" in one_error_line(code, err)


# --------------------------------------------------------------------------------------------- 3. links
def test_planted_symlinks_in_a_run_folder_are_never_written_through(tiny_clip_spec: str, tmp_path: Path) -> None:
    settings = tiny_settings(tiny_clip_spec, iterations=6, save_every=2)
    straight = generate(settings, tmp_path / "straight")

    class StopAt3:
        def __call__(self, report) -> None:
            if report.step == 3:
                raise KeyboardInterrupt

    stopped = generate(settings, tmp_path / "stopped", on_step=StopAt3()).run_dir
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    for name in ("state.pt.tmp", "final.png.tmp", "run.json.tmp", rundir.FINAL_NAME, "frames/000006.png"):
        (stopped / name).unlink(missing_ok=True)
        (stopped / name).symlink_to(victim)
    result = resume(stopped)
    assert victim.read_text() == "precious"
    final = stopped / rundir.FINAL_NAME
    assert not final.is_symlink() and final.read_bytes() == straight.image_path.read_bytes()
    assert result.completed
    assert not [p for p in stopped.rglob("*.tmp") if not p.is_symlink()]  # no temporary file left behind


# --------------------------------------------------------------------------------------------- 4. Ctrl-C
def test_ctrl_c_during_start_up_is_exit_130_and_one_line(tiny_clip_spec: str, tmp_path: Path, capsys,
                                                          monkeypatch) -> None:  # fmt: skip
    import dreamcanvas.engine as engine

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "build_job", interrupted)
    code, _, err = run_cli([*tiny_generate_args(tiny_clip_spec), "--out", tmp_path / "run"], capsys)
    assert "stopped" in one_error_line(code, err, 130)
    assert not (tmp_path / "run").exists()


def test_sigint_stops_a_run_even_when_the_shell_ignores_it(tiny_clip_spec: str, tmp_path: Path) -> None:
    """`dreamcanvas generate ... & kill -INT $!` from a script: SIGINT arrives ignored, yet it must stop the run."""
    command = [sys.executable, "-m", "dreamcanvas", *tiny_generate_args(tiny_clip_spec)]
    command.remove("--quiet")
    command[command.index("-i") + 1] = "100000"
    process = subprocess.Popen(
        [*command, "--out", str(tmp_path / "run")],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert process.stderr is not None
    first = process.stderr.readline()  # "seed: N": past start-up's first checks, models still to load
    assert first.startswith("seed:"), first
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=120)
    lines = [line for line in rest.splitlines() if line.strip() and "\r" not in line and "drawing" not in line]
    assert process.returncode == 130, rest
    assert lines and "stopped" in lines[-1]


# --------------------------------------------------------------------------------------------- 5. NaN and inf
@pytest.mark.parametrize(
    "flags",
    [["--tv-weight", "nan"], ["--fourier-decay", "nan"], ["--lr", "inf"], ["--fourier-colors", "nan"],
     ["--cut-pow", "nan"], ["--zoom-rotate", "inf"], ["--init-weight", "-inf"], ["--zoom-scale", "nan"],
     ["--fps", "100000"], ["--augs", ""], ["--augs", "flip,,noise"]],
)  # fmt: skip
def test_non_finite_or_unbounded_settings_are_one_line(tiny_clip_spec: str, tmp_path: Path, capsys, monkeypatch,
                                                        flags) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli([*tiny_generate_args(tiny_clip_spec, *flags), "--out", tmp_path / "run"], capsys)
    assert flags[0] in one_error_line(code, err)
    assert tree(tmp_path) == {}


def test_run_json_is_strict_json_even_when_a_loss_is_not_finite(tiny_clip_spec: str, tmp_path: Path) -> None:
    from dreamcanvas import engine

    run = generate(tiny_settings(tiny_clip_spec, iterations=2, save_every=2), tmp_path / "run")
    state = engine.RunState(step=2, losses=[1.0, float("nan")])
    engine.write_run_json(Run.reopen(run.run_dir, engine.METHOD, run.settings), state)

    def refuse(name: str):
        raise ValueError(name)

    stored = json.loads((run.run_dir / rundir.RUN_JSON).read_text(), parse_constant=refuse)
    assert stored["losses"] == [1.0, None]


def test_a_diverging_run_stops_with_one_line_and_keeps_its_checkpoint(tiny_clip_spec: str, tmp_path: Path,
                                                                      monkeypatch) -> None:  # fmt: skip
    from dreamcanvas import engine
    from dreamcanvas.errors import DreamcanvasError

    original = engine.Job.loss
    settings = tiny_settings(tiny_clip_spec, iterations=5, save_every=2)
    run_dir = tmp_path / "run"
    calls = {"n": 0}

    def diverge_at_step_4(self, image):
        calls["n"] += 1
        loss = original(self, image)
        return loss * float("nan") if calls["n"] == 4 else loss

    monkeypatch.setattr(engine.Job, "loss", diverge_at_step_4)
    with pytest.raises(DreamcanvasError, match="diverged") as error:
        generate(settings, run_dir)
    assert "\n" not in str(error.value)
    checkpoint = torch.load(run_dir / rundir.STATE_NAME, weights_only=True)
    assert checkpoint["step"] == 2  # the last checkpoint of finite parameters, not the diverged ones
    assert all(torch.isfinite(t).all() for t in checkpoint["generator"].values())


# --------------------------------------------------------------------------------------------- 6. picture bombs
def _png_declaring(path: Path, width: int, height: int) -> Path:
    """A small PNG whose header claims ``width x height`` pixels (its data is that of a 1x1 picture)."""
    Image.new("RGB", (1, 1), "white").save(path)
    data = bytearray(path.read_bytes())
    ihdr = 8 + 8  # signature, then the IHDR chunk's length and type
    data[ihdr : ihdr + 8] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    crc = zlib.crc32(bytes(data[ihdr - 4 : ihdr + 13]))
    data[ihdr + 13 : ihdr + 17] = crc.to_bytes(4, "big")
    path.write_bytes(bytes(data))
    return path


def test_a_picture_bomb_is_refused_from_its_header(tiny_clip_spec: str, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    bomb = _png_declaring(tmp_path / "bomb.png", 30000, 30000)
    before = tree(tmp_path)
    code, _, err = run_cli(["score", bomb, "a cat", "--clip", tiny_clip_spec], capsys)
    assert "30000x30000" in one_error_line(code, err)
    code, _, err = run_cli([*tiny_generate_args(tiny_clip_spec, "--init-image", bomb), "--out", "run"], capsys)
    assert "30000x30000" in one_error_line(code, err)
    assert tree(tmp_path) == before


# --------------------------------------------------------------------------------------------- 8. full disk
@pytest.fixture
def small_disk(tmp_path: Path):
    """A 4 MB tmpfs, so that a disk really fills up (needs root, as on the developers' machines and CI)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_keeps_the_last_checkpoint_and_says_what_to_free(tiny_clip_spec: str, small_disk: Path,
                                                                      tmp_path: Path, capsys) -> None:  # fmt: skip
    settings = tiny_settings(tiny_clip_spec, iterations=6, save_every=2)
    straight = generate(settings, tmp_path / "straight")

    class StopAt2:
        def __call__(self, report) -> None:
            if report.step == 2:
                raise KeyboardInterrupt

    run = generate(settings, small_disk / "run", on_step=StopAt2()).run_dir
    checkpoint = (run / rundir.STATE_NAME).read_bytes()
    filler = small_disk / "filler"
    with filler.open("wb") as file, pytest.raises(OSError):
        while True:
            file.write(b"\0" * 65536)
            file.flush()
    code, _, err = run_cli(["resume", run, "-q"], capsys)
    assert "disk is full" in one_error_line(code, err) and "free at least" in err
    assert (run / rundir.STATE_NAME).read_bytes() == checkpoint
    assert not list(run.rglob("*.tmp"))
    filler.unlink()
    code, _, err = run_cli(["resume", run, "-q"], capsys)
    assert code == 0, err
    assert (run / rundir.FINAL_NAME).read_bytes() == straight.image_path.read_bytes()


# --------------------------------------------------------------------------------------------- 9. stored settings
@pytest.mark.parametrize(
    ("stored", "message"),
    [
        ({"settings": {"prompts": ["a"], "width": "64"}}, "'width' must be an integer"),
        ({"settings": {"prompts": ["a"], "clip_models": [1]}}, "'clip_models' must be a list of texts"),
        ({"settings": [1, 2]}, "no 'settings' object"),
        ({"step": 3}, "no 'settings' object"),
        ({"settings": {"prompts": ["a"], "tv_weight": float("nan")}}, "not valid JSON"),
        ({"settings": {"prompts": ["a"], "tv_weight": float("inf")}}, "'tv_weight' must be a finite number"),
        ({"settings": {"prompts": ["a"], "colour": "red"}}, "unknown fields ['colour']"),
        ({"settings": {"prompts": ["a"], "zoom": 1}}, "'zoom' must be true or false"),
    ],
)
def test_from_a_png_with_wrong_settings_is_one_line(tiny_clip_spec: str, tmp_path: Path, capsys, monkeypatch,
                                                     stored, message) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    picture = tmp_path / "made.png"
    png.save_png(torch.zeros(1, 3, 8, 8), picture, {"version": "0"})
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_itxt(png.METADATA_KEY, json.dumps(stored).replace("Infinity", "1e999"))
    Image.open(picture).save(picture, pnginfo=info)
    before = tree(tmp_path)
    code, _, err = run_cli(["generate", "--from", picture, "--clip", tiny_clip_spec, "-q"], capsys)
    assert message in one_error_line(code, err)
    assert tree(tmp_path) == before


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda stored: stored.update(settings=[1]), "no 'settings' object"),
        (lambda stored: stored.update(step="3"), "'step' should be"),
        (lambda stored: stored["settings"].update(cutn="many"), "'cutn' must be an integer"),
        (lambda stored: stored["settings"].update(width=48), "width 32 -> 48"),
    ],
)
def test_a_damaged_or_edited_run_json_is_one_line(tiny_clip_spec: str, tmp_path: Path, capsys, edit,
                                                   message) -> None:  # fmt: skip
    run = generate(tiny_settings(tiny_clip_spec, iterations=4, save_every=2), tmp_path / "run").run_dir
    path = run / rundir.RUN_JSON
    stored = json.loads(path.read_text())
    stored["step"] = 2
    edit(stored)
    path.write_text(json.dumps(stored))
    code, _, err = run_cli(["resume", run, "-i", "6", "-q"], capsys)
    assert message in one_error_line(code, err)


@pytest.mark.parametrize(
    "checkpoint", [{"step": 2}, [1, 2, 3], {"step": 2, "losses": [], "rng_state": torch.zeros(3), "generator": {},
                                            "optimizer": {}}],
)  # fmt: skip
def test_a_damaged_state_pt_is_one_line(tiny_clip_spec: str, tmp_path: Path, capsys, checkpoint) -> None:
    run = generate(tiny_settings(tiny_clip_spec, iterations=4, save_every=2), tmp_path / "run").run_dir
    torch.save(checkpoint, run / rundir.STATE_NAME)
    code, _, err = run_cli(["resume", run, "-i", "6", "-q"], capsys)
    assert "damaged" in one_error_line(code, err)


@pytest.mark.parametrize("command", ["clip", "vqgan", "diffusion"])
@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0"])
def test_trainers_refuse_bad_learning_rates_and_leave_no_folder(captioned: Path, tmp_path: Path, capsys, command,
                                                                value) -> None:  # fmt: skip
    out = tmp_path / "out"
    code, _, err = run_cli(["train", command, captioned, "--out", out, "--lr", value, "-q"], capsys)
    assert "--lr" in one_error_line(code, err)
    assert not out.exists()


# --------------------------------------------------------------------------------------------- 10. smaller
def test_train_clip_leaves_no_empty_out_folder_after_a_failed_start(tmp_path: Path, capsys) -> None:
    empty = tmp_path / "no-pictures"
    empty.mkdir()
    out = tmp_path / "out"
    code, _, err = run_cli(["train", "clip", empty, "--out", out, "--config", "tiny", "-q"], capsys)
    one_error_line(code, err)
    assert not out.exists()


def test_downloading_a_bundled_model_says_nothing_was_downloaded(capsys) -> None:
    code, _out, err = run_cli(["models", "download", "bundled:guide"], capsys)
    assert code == 0 and "nothing to download" in err and "downloaded" not in err.replace("nothing to download", "")


def test_no_arguments_shows_the_help_without_an_empty_error_line(capsys) -> None:
    _code, out, err = run_cli([], capsys)
    assert "Usage" in out + err
    assert "error:" not in err


@pytest.mark.parametrize("texts", [[""], ["  "], ["a cat", "--against", ""]])
def test_score_refuses_empty_prompts(tiny_clip_spec: str, tmp_path: Path, capsys, texts) -> None:
    picture = tmp_path / "p.png"
    Image.new("RGB", (16, 16), "red").save(picture)
    code, _, err = run_cli(["score", picture, *texts, "--clip", tiny_clip_spec], capsys)
    assert "non-empty" in one_error_line(code, err)


def test_a_frames_folder_planted_as_a_link_is_refused(tiny_clip_spec: str, tmp_path: Path, capsys) -> None:
    run = generate(tiny_settings(tiny_clip_spec, iterations=4, save_every=2), tmp_path / "run").run_dir
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.rmtree(run / rundir.FRAMES_DIR)
    (run / rundir.FRAMES_DIR).symlink_to(elsewhere)
    code, _, err = run_cli(["resume", run, "-i", "6", "-q"], capsys)
    assert "not a plain folder" in one_error_line(code, err)
    assert not list(elsewhere.iterdir())


def test_temporary_files_never_reuse_a_predictable_name(tmp_path: Path) -> None:
    from dreamcanvas.files import atomic

    target = tmp_path / "state.pt"
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / "state.pt.tmp").symlink_to(victim)
    atomic.write_bytes(target, b"new")
    assert victim.read_text() == "precious" and target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.pt", "state.pt.tmp", "victim"]


def test_nothing_outside_the_run_folder_is_written_by_a_run(tiny_clip_spec: str, tmp_path: Path, capsys,
                                                             monkeypatch) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    (tmp_path / "keep.txt").write_text("x")
    code, _, err = run_cli([*tiny_generate_args(tiny_clip_spec, "--video", "--gif"), "--out", "run"], capsys)
    assert code == 0, err
    assert {p.parts[0] for p in Path(".").rglob("*")} == {"keep.txt", "run"}
    shutil.rmtree("run")


@pytest.mark.parametrize(
    "flags", [["--size", "0"], ["--size", "100000"], ["--synthetic", "-1"], ["--seed", "-2"],
              ["--split", "nan,nan,nan"], ["--split", "inf,1,1"], ["--mix", "1,nan,1"]],
)  # fmt: skip
def test_data_clipart_refuses_impossible_numbers_before_reading_anything(tmp_path: Path, capsys, flags) -> None:
    code, _, err = run_cli(["data", "clipart", tmp_path / "corpus", *flags, "-q"], capsys)
    assert flags[0] in one_error_line(code, err)
    assert not (tmp_path / "corpus").exists()


def test_a_folder_written_atomically_appears_whole_or_leaves_the_old_one(tmp_path: Path) -> None:
    """Model folders (train sd's model/, an assembled bundled model) replace the old one only when complete."""
    from dreamcanvas.files.atomic import folder_atomically

    target = tmp_path / "model"
    with folder_atomically(target) as staging:
        (staging / "weights.bin").write_bytes(b"first")
    assert (target / "weights.bin").read_bytes() == b"first"
    assert oct(target.stat().st_mode & 0o777) == oct(0o777 & ~_umask())  # not mkdtemp's 0700
    with pytest.raises(RuntimeError), folder_atomically(target) as staging:
        (staging / "weights.bin").write_bytes(b"half")
        raise RuntimeError("the disk filled up")
    assert (target / "weights.bin").read_bytes() == b"first"
    with folder_atomically(target) as staging:
        (staging / "other.bin").write_bytes(b"second")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model"]  # no staging or retired folder left
    assert [path.name for path in target.iterdir()] == ["other.bin"]


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask
