"""``dreamcanvas sd``: the command and its run folder, on a tiny random diffusers pipeline loaded as ``local:DIR``.

Nothing is downloaded and nothing is faked: the pipeline and TAESD are diffusers' own classes with tiny widths,
saved with ``save_pretrained`` (tests/sd_tiny.py). Pictures are compared byte for byte in fp32, where the
arithmetic is the same on every run.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import offline_hub, one_error_line, run_cli, tree, write_picture
from PIL import Image, PngImagePlugin
from sd_tiny import make_tiny_autoencoder, make_tiny_pipeline

from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.outputs import png, rundir, video
from dreamcanvas.sd import models, run
from dreamcanvas.sd.settings import SDSettings


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_pipeline(tmp_path_factory.mktemp("sd") / "tiny-sd")


@pytest.fixture(scope="module")
def taesd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_autoencoder(tmp_path_factory.mktemp("taesd") / "tiny-taesd")


@pytest.fixture(autouse=True)
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test may download: an empty, offline HF cache."""
    return offline_hub(tmp_path / "hub", monkeypatch)


@pytest.fixture
def sd_args(tiny_dir: Path, taesd_dir: Path):
    def args(*extra, prompt: str = "a red apple") -> list:
        return ["sd", prompt, "--model", f"local:{tiny_dir}", "--tiny-decoder", f"local:{taesd_dir}",
                "--size", "32", "32", "--steps", "3", "--seed", "7", "--precision", "fp32", "-q", *extra]  # fmt: skip

    return args


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as picture:
        return np.asarray(picture.convert("RGB"), dtype=np.int16)


def draws(capsys, args: list) -> list[Path]:
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    return [Path(line) for line in out.split()]


# ------------------------------------------------------------------------------------------------- pictures
def test_text_to_image_gives_the_size_asked_and_same_seed_same_bytes(capsys, tmp_path, sd_args):
    [first] = draws(capsys, sd_args("--size", "48", "32", "--out", tmp_path / "a"))
    [again] = draws(capsys, sd_args("--size", "48", "32", "--out", tmp_path / "b"))
    [other] = draws(capsys, sd_args("--size", "48", "32", "--seed", "8", "--out", tmp_path / "c"))
    with Image.open(first) as picture:
        assert picture.size == (48, 32)
    assert first.read_bytes() == again.read_bytes()
    assert np.abs(pixels(first) - pixels(other)).mean() > 1


def test_the_picture_is_what_diffusers_own_pipeline_draws(capsys, tmp_path, sd_args, tiny_dir):
    """fp32, the same seed and settings: dreamcanvas adds files around the call, never changes the picture."""
    from diffusers import StableDiffusionPipeline

    [path] = draws(capsys, sd_args("--guidance", "3", "--negative", "blurry", "--out", tmp_path / "ours"))
    pipe = StableDiffusionPipeline.from_pretrained(tiny_dir, safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe(
        "a red apple", negative_prompt="blurry", num_inference_steps=3, guidance_scale=3.0, width=32, height=32,
        generator=torch.Generator("cpu").manual_seed(7),
    ).images[0]  # fmt: skip
    assert np.array_equal(pixels(path), np.asarray(theirs, dtype=np.int16))


def test_a_different_negative_prompt_changes_the_picture(capsys, tmp_path, sd_args):
    [plain] = draws(capsys, sd_args("--guidance", "4", "--out", tmp_path / "a"))
    [negative] = draws(capsys, sd_args("--guidance", "4", "--negative", "blurry text", "--out", tmp_path / "b"))
    assert np.abs(pixels(plain) - pixels(negative)).mean() > 1


def test_image_to_image_keeps_as_much_of_the_init_image_as_strength_says(capsys, tmp_path, sd_args):
    """Random weights draw no colours faithfully, but how much two init pictures still differ after the run
    must fall as --strength rises (at 1 the init is all but ignored)."""
    red = write_picture(tmp_path / "red.png", (220, 20, 20), (64, 64))
    blue = write_picture(tmp_path / "blue.png", (20, 20, 220), (64, 64))
    differences = []
    for strength in ("0.25", "0.5", "1"):
        made = [draws(capsys, sd_args("--steps", "4", "--strength", strength, "--init-image", init,
                                      "--out", tmp_path / f"{init.stem}-{strength}"))[0]
                for init in (red, blue)]  # fmt: skip
        differences.append(np.abs(pixels(made[0]) - pixels(made[1])).mean())
    assert differences[0] > differences[1] > differences[2] and differences[0] > 3
    picture = tmp_path / "red-0.5" / rundir.FINAL_NAME
    with Image.open(picture) as opened:
        assert opened.size == (32, 32)  # the init picture (64x64) is resized to --size
    stored = png.read_metadata(picture, "sd")["settings"]
    assert stored["init_image"] == str(red) and stored["strength"] == 0.5
    assert "Denoising strength: 0.5" in png.read_text_chunk(picture, run.PARAMETERS_KEY)
    assert json.loads((tmp_path / "red-0.5" / rundir.RUN_JSON).read_text())["step"] == 2  # 4 steps x 0.5


# ------------------------------------------------------------------------------------------------- run folder
@pytest.mark.parametrize(("steps", "save_every", "frames"), [(4, 1, [1, 2, 3, 4]), (4, 2, [2, 4]), (4, 3, [3, 4])])
def test_previews_every_n_steps_end_on_the_picture_and_make_the_video(
    capsys, tmp_path, sd_args, steps, save_every, frames
):
    folder = tmp_path / "run"
    [final] = draws(capsys, sd_args("--steps", steps, "--save-every", save_every, "--video", "--gif", "--out", folder))
    made = rundir.list_frames(folder)
    assert [int(path.stem) for path in made] == frames
    assert [png.read_metadata(path, "sd")["step"] for path in made] == frames
    assert np.array_equal(pixels(made[-1]), pixels(final))  # the last frame is the kept picture, not a preview
    assert video.count_frames(folder / rundir.VIDEO_NAME) == len(frames)
    with Image.open(folder / rundir.GIF_NAME) as gif:
        assert gif.n_frames == len(frames)
    record = json.loads((folder / rundir.RUN_JSON).read_text())
    assert record["method"] == "sd" and record["completed"] and record["pictures"] == ["final.png"]
    assert record["settings"]["seed"] == 7 and record["sampler"] == "Euler"


def test_vae_previews_and_the_taesd_decoder(capsys, tmp_path, sd_args):
    """--preview vae decodes frames exactly as the final picture is decoded; --decoder taesd decodes it fast."""
    folder = tmp_path / "vae"
    [final] = draws(capsys, sd_args("--steps", "2", "--preview", "vae", "--out", folder))
    assert len(rundir.list_frames(folder)) == 2
    [tiny] = draws(capsys, sd_args("--steps", "2", "--decoder", "taesd", "--out", tmp_path / "taesd"))
    assert np.abs(pixels(final) - pixels(tiny)).mean() > 1  # a different (random) decoder made it


def test_a_batch_stores_for_each_picture_the_seed_that_makes_it_alone(capsys, tmp_path, sd_args):
    pictures = draws(capsys, sd_args("--batch", "2", "--out", tmp_path / "batch"))
    assert [path.name for path in pictures] == ["final-1.png", "final-2.png"]
    second = png.read_metadata(pictures[1], "sd")["settings"]
    assert (second["seed"], second["batch"]) == (8, 1)
    [alone] = draws(capsys, ["sd", "--from", pictures[1], "-q", "--out", tmp_path / "alone"])
    assert np.abs(pixels(alone) - pixels(pictures[1])).max() <= 2  # a batch of 2 vs 1: the last bits may differ
    with Image.open(rundir.list_frames(tmp_path / "batch")[-1]) as frame:
        assert frame.size == (64, 32)  # frames show the whole batch side by side


# ------------------------------------------------------------------------------------------------- --from
def test_from_remakes_the_picture_and_typed_flags_override(capsys, tmp_path, sd_args):
    [original] = draws(capsys, sd_args("--guidance", "2", "--negative", "blurry", "--out", tmp_path / "a"))
    [remade] = draws(capsys, ["sd", "--from", original, "-q", "--out", tmp_path / "b"])
    assert remade.read_bytes() == original.read_bytes()
    [changed] = draws(capsys, ["sd", "--from", original, "--seed", "9", "-q", "--out", tmp_path / "c"])
    stored = png.read_metadata(changed, "sd")["settings"]
    assert (stored["seed"], stored["negative"], stored["guidance"]) == (9, "blurry", 2.0)


def _only_parameters_text(source: Path, target: Path) -> Path:
    """The picture as another tool would have written it: AUTOMATIC1111's text, no dreamcanvas JSON."""
    info = PngImagePlugin.PngInfo()
    info.add_text(run.PARAMETERS_KEY, png.read_text_chunk(source, run.PARAMETERS_KEY))
    with Image.open(source) as picture:
        picture.save(target, pnginfo=info)
    return target


def test_the_automatic1111_text_alone_remakes_the_picture(capsys, tmp_path, sd_args, taesd_dir):
    [original] = draws(capsys, sd_args("--guidance", "2.5", "--negative", "text", "--sampler", "DPM++ 2M Karras",
                                       "--out", tmp_path / "a"))  # fmt: skip
    text = png.read_text_chunk(original, run.PARAMETERS_KEY)
    assert text.splitlines()[1] == "Negative prompt: text"
    assert "Sampler: DPM++ 2M Karras, CFG scale: 2.5, Seed: 7, Size: 32x32" in text
    theirs = _only_parameters_text(original, tmp_path / "a1111.png")
    [remade] = draws(capsys, ["sd", "--from", theirs, "--precision", "fp32", "--tiny-decoder", f"local:{taesd_dir}",
                              "-q", "--out", tmp_path / "b"])  # fmt: skip
    assert np.array_equal(pixels(remade), pixels(original))


def test_a_generate_picture_is_not_an_sd_picture(capsys, tmp_path):
    made_by_generate = tmp_path / "g.png"
    png.save_png(torch.zeros(1, 3, 8, 8), made_by_generate, {"version": "0", "step": 1, "settings": {}})
    code, _, err = run_cli(["sd", "--from", made_by_generate, "--out", tmp_path / "x"], capsys)
    assert "made by 'dreamcanvas generate'" in one_error_line(code, err)
    sd_picture = tmp_path / "s.png"
    png.save_png(torch.zeros(1, 3, 8, 8), sd_picture, {"version": "0", "method": "sd", "step": 1, "settings": {}})
    code, _, err = run_cli(["generate", "--from", sd_picture, "--out", tmp_path / "y"], capsys)
    assert "made by 'dreamcanvas sd'" in one_error_line(code, err)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


# ------------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (("--model", "no-such-model"), "is not a Stable Diffusion model"),
        (("--sampler", "Euler zz"), "is not a sampler"),
        (("--size", "30", "32"), "multiple of 8"),
        (("--strength", "0"), "--strength must be"),
        (("--strength", "1.5"), "--strength must be"),
        (("--init-image", "missing.png", "--steps", "4"), "missing.png"),
        (("--preview", "none", "--video"), "--video and --gif show the previews"),
        (("--preview", "sometimes"), "--preview must be one of"),
        (("--batch", "0"), "--batch must be"),
    ],
)
def test_bad_input_is_one_line_a_non_zero_exit_and_nothing_written(capsys, tmp_path, sd_args, extra, words):
    before = tree(tmp_path)
    code, _, err = run_cli(sd_args(*extra, "--out", tmp_path / "run"), capsys)
    assert words in one_error_line(code, err)
    assert tree(tmp_path) == before


def test_an_existing_out_folder_is_never_overwritten(capsys, tmp_path, sd_args):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("mine")
    before = tree(tmp_path)
    code, _, err = run_cli(sd_args("--out", tmp_path / "run"), capsys)
    assert "already exists" in one_error_line(code, err)
    assert tree(tmp_path) == before


def test_a_run_that_would_not_fit_in_memory_is_refused_unless_forced(capsys, tmp_path, sd_args, monkeypatch):
    from dreamcanvas.memory import estimates

    monkeypatch.setattr(estimates.system, "available_memory", lambda: 1_000_000_000)
    code, _, err = run_cli(sd_args("--out", tmp_path / "run"), capsys)
    assert "needs about" in one_error_line(code, err) and "--force" in err
    assert not (tmp_path / "run").exists()
    draws(capsys, sd_args("--force", "--out", tmp_path / "run"))
    assert (tmp_path / "run" / rundir.FINAL_NAME).is_file()


def test_a_taesd_that_cannot_be_had_is_one_line_for_the_decoder_and_a_warning_for_previews(
    capsys, tmp_path, tiny_dir
):
    """Offline with no cached TAESD: previews fall back to the VAE; --decoder taesd refuses before writing."""
    args = ["sd", "x", "--model", f"local:{tiny_dir}", "--size", "32", "32", "--steps", "2", "--precision", "fp32",
            "-q"]  # fmt: skip
    code, _, err = run_cli([*args, "--decoder", "taesd", "--out", tmp_path / "a"], capsys)
    assert "--decoder taesd: no tiny decoder" in one_error_line(code, err)
    assert not (tmp_path / "a").exists()
    code, _, err = run_cli([*args, "--out", tmp_path / "b"], capsys)
    assert code == 0 and "previews come from the model's VAE" in err
    assert len(rundir.list_frames(tmp_path / "b")) == 2


# ------------------------------------------------------------------------------------------------- the API
def test_a_stopped_run_keeps_its_frames_and_says_it_did_not_complete(tmp_path, tiny_dir, taesd_dir):
    settings = SDSettings(prompt="a cat", model=f"local:{tiny_dir}", tiny_decoder=f"local:{taesd_dir}", steps=4,
                          width=32, height=32, seed=1, precision="fp32")  # fmt: skip

    def stop_after_two(done: int, total: int) -> None:
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run.draw_run(settings, tmp_path / "run", on_step=stop_after_two)
    record = json.loads((tmp_path / "run" / rundir.RUN_JSON).read_text())
    assert (record["completed"], record["step"]) == (False, 2)
    assert [path.name for path in rundir.list_frames(tmp_path / "run")] == ["000001.png", "000002.png"]
    assert not (tmp_path / "run" / rundir.FINAL_NAME).exists()


def test_a_loaded_pipeline_is_reused_and_checks_come_before_any_file(tmp_path, tiny_dir, taesd_dir):
    settings = SDSettings(prompt="a dog", model=f"local:{tiny_dir}", tiny_decoder=f"local:{taesd_dir}", steps=2,
                          width=32, height=32, seed=3, precision="fp32")  # fmt: skip
    loaded = run.load_models(settings)
    result = run.draw_run(settings, tmp_path / "one", models=loaded)
    again = run.draw_run(settings, tmp_path / "two", models=loaded)
    assert result.pictures[0].read_bytes() == again.pictures[0].read_bytes() and result.steps == 2
    with pytest.raises(DreamcanvasError, match="multiple of 8"):
        run.draw_run(settings.replace(width=33), tmp_path / "three", models=loaded)
    assert not (tmp_path / "three").exists()
    assert isinstance(loaded.pipe, type(models.load_pipeline(f"local:{tiny_dir}", torch.float32)))
