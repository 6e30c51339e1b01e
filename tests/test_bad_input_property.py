"""Property: whatever a user types or a file holds, a command either refuses it cleanly or finishes a sound run.

For every command, hypothesis overrides one to three options of a small valid call with hostile values (NaN,
infinities, huge and negative numbers, empty and blank text, wrong types, missing and non-picture paths), and
for the stored settings (``--from`` a PNG, ``resume`` a run folder) it replaces one field with a JSON value of
any type. Each case must end in exactly one of two ways:

* exit code 2, exactly one line on stderr (``dreamcanvas: error: ...``), no traceback, and the working folder
  exactly as it was: nothing written, nothing overwritten;
* exit code 0, a finished run whose losses are all finite, every new file inside its own output folder.

The examples are derandomised (the same cases on every run, so CI is reproducible); set
``DREAMCANVAS_HYPOTHESIS_RANDOM=1`` to explore new ones. ``pytest -s`` prints how many cases each command tried.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import os
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image, PngImagePlugin

from dreamcanvas.cli import main
from dreamcanvas.engine import generate
from dreamcanvas.outputs import png, rundir
from dreamcanvas.settings import GenerateSettings

PROPERTY = settings(
    max_examples=int(os.environ.get("DREAMCANVAS_HYPOTHESIS_EXAMPLES", "40")),
    deadline=None,
    derandomize=not os.environ.get("DREAMCANVAS_HYPOTHESIS_RANDOM"),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
OUTCOMES: dict[str, Counter] = {}

HOSTILE_TEXT = ["nan", "NaN", "inf", "-inf", "1e400", "-1e400", "-1", "0", "-0", "", " ", "abc", "1.5", "1e-300",
                "9" * 30, "9223372036854775808", "-9223372036854775809", "1,2", ",", "☃", "0x10", "1_000", "2**8",
                "none", "-", "--", "'", "{}"]  # fmt: skip
SMALL_NUMBERS = st.integers(-3, 12).map(str) | st.sampled_from(["0.5", "1.0", "2.5", "0.01", "-0.5"])
HOSTILE = st.sampled_from(HOSTILE_TEXT) | SMALL_NUMBERS | st.floats(allow_nan=True, allow_infinity=True).map(repr)
HOSTILE_PATHS = st.sampled_from(["", "missing.png", "notes.txt", ".", "bomb.png", "truncated.png", "good.png",
                                 "good.png:nan", "good.png:1:2:3", "good.png:-1"])  # fmt: skip
"""Files the working folder holds (see :func:`_playground`), and some it does not."""
NO_ENDLESS_RUNS = HOSTILE.filter(lambda text: text.strip() != "-1")
"""``--iterations -1`` is valid and runs until Ctrl-C: not a case that can finish here."""


# --------------------------------------------------------------------------------------------- the harness
def _playground(root: Path) -> None:
    """A working folder with the files hostile paths point at."""
    Image.new("RGB", (24, 24), "red").save(root / "good.png")
    whole = (root / "good.png").read_bytes()
    (root / "truncated.png").write_bytes(whole[: len(whole) // 2])
    (root / "notes.txt").write_text("not a picture")
    bomb = bytearray(whole)
    bomb[16:24] = (30000).to_bytes(4, "big") * 2  # a header claiming 30000 x 30000 pixels (CRC left wrong)
    (root / "bomb.png").write_bytes(bytes(bomb))


def _snapshot(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def _run(argv: list[str]) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in argv])
            code = 0
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else 1
    return code, err.getvalue()


def _finite_losses(folder: Path) -> bool:
    for name, key in ((rundir.RUN_JSON, "losses"), ("training.json", "final_loss_mean_of_last_50")):
        path = folder / name
        if path.is_file():
            stored = json.loads(path.read_text())
            if key not in stored:  # a method without losses (sd)
                return True
            values = stored[key]
            values = values if isinstance(values, list) else [values]
            return all(value is not None and math.isfinite(value) for value in values)
    return True  # a command without losses (score, data, models)


def check_outcome(command: str, argv: list[str], root: Path, out: Path | None) -> None:
    """Run ``argv`` in ``root``: either one clean refusal with nothing written, or a sound finished run."""
    before = _snapshot(root)
    code, err = _run(argv)
    counts = OUTCOMES.setdefault(command, Counter())
    counts["tried"] += 1
    if code == 2:
        counts["refused"] += 1
        assert err.count("\n") == 1 and err.startswith("dreamcanvas: error: "), (argv, err)
        assert "Traceback" not in err
        assert _snapshot(root) == before, (argv, "a refused command wrote something")
        return
    assert code == 0, (argv, code, err)
    counts["finished"] += 1
    after = _snapshot(root)
    changed = {name for name in after if before.get(name, b"\0missing") != after[name]}
    assert set(before) <= set(after), (argv, "a file disappeared")
    if out is not None:
        assert all(Path(root / name).is_relative_to(root / out) for name in changed), (argv, changed)
        assert _finite_losses(root / out), argv
    else:
        assert not changed, (argv, changed)


def _overrides(flags: dict[str, st.SearchStrategy]) -> st.SearchStrategy[dict[str, str]]:
    return st.dictionaries(st.sampled_from(sorted(flags)), st.just(None), min_size=1, max_size=3).flatmap(
        lambda chosen: st.fixed_dictionaries({flag: flags[flag] for flag in chosen})
    )


def _argv(base: dict[str, str | tuple[str, ...] | None], changes: dict[str, str | tuple[str, ...]]) -> list[str]:
    merged = {**base, **changes}
    argv: list[str] = []
    for flag, value in merged.items():
        if value is None:
            argv.append(flag)
        elif isinstance(value, tuple):
            argv += [flag, *value]
        else:
            argv.append(f"{flag}={value}")
    return argv


@pytest.fixture(scope="module", autouse=True)
def _report_outcomes():
    yield
    for command, counts in sorted(OUTCOMES.items()):
        print(f"\nproperty {command}: {counts['tried']} cases, {counts['refused']} refused with one line, "
              f"{counts['finished']} finished")  # fmt: skip


# --------------------------------------------------------------------------------------------- the commands
GENERATE_FLAGS: dict[str, st.SearchStrategy] = {
    "--size": st.tuples(HOSTILE, HOSTILE) | st.tuples(SMALL_NUMBERS, SMALL_NUMBERS),
    "--cutn": HOSTILE, "--cut-pow": HOSTILE, "--tv-weight": HOSTILE, "--init-weight": HOSTILE,
    "--fourier-decay": HOSTILE, "--fourier-colors": HOSTILE, "--story-every": HOSTILE, "--zoom-every": HOSTILE,
    "--zoom-scale": HOSTILE, "--zoom-shift-x": HOSTILE, "--zoom-shift-y": HOSTILE, "--zoom-rotate": HOSTILE,
    "--iterations": NO_ENDLESS_RUNS, "--lr": HOSTILE, "--seed": HOSTILE, "--save-every": HOSTILE, "--fps": HOSTILE,
    "--augs": HOSTILE | st.sampled_from(["none", "flip", "flip,noise", "noise,,flip", "NONE"]),
    "--precision": HOSTILE | st.sampled_from(["auto", "fp32", "bf16", "fp16"]),
    "--generator": HOSTILE | st.sampled_from(["pixel", "fourier", "vqgan", "diffusion"]),
    "--sampler": HOSTILE | st.sampled_from(["ddim", "ddpm"]), "--eta": HOSTILE, "--skip-steps": HOSTILE,
    "--clip-guidance-scale": HOSTILE, "--tv-scale": HOSTILE, "--range-scale": HOSTILE,
    "--diffusion-model": HOSTILE | st.sampled_from(["local:missing.pt", "local:notes.txt", "local:good.png"]),
    "--optimizer": HOSTILE | st.sampled_from(["adam", "adamw", "sgd", "lbfgs"]),
    "--init-noise": HOSTILE | st.sampled_from(["none", "pixels", "gradient"]),
    "--vqgan-model": HOSTILE | st.sampled_from(["bundled:vqgan", "local:missing", "vqgan_imagenet_f16_16384"]),
    "--init-image": HOSTILE_PATHS, "--image-prompt": HOSTILE_PATHS, "--target-image": HOSTILE_PATHS,
    "--prompt": HOSTILE | st.sampled_from(["a:nan", "a:1:2:3", "a ^ b", "|", ":", "a:-1|b"]),
    "--clip": HOSTILE | st.sampled_from(["local-dir:missing", "hf-hub:x", "bundled:nope"]),
}  # fmt: skip


@PROPERTY
@given(changes=_overrides(GENERATE_FLAGS))
def test_generate_refuses_cleanly_or_draws(tiny_clip_spec: str, changes: dict) -> None:
    base = {"--clip": tiny_clip_spec, "--size": ("24", "24"), "--cutn": "2", "--iterations": "3", "--save-every": "2",
            "--seed": "1", "--quiet": None, "--out": "run", "--vqgan-model": "bundled:vqgan"}  # fmt: skip
    with tempfile.TemporaryDirectory() as folder, contextlib.chdir(folder):
        _playground(Path(folder))
        check_outcome("generate", ["generate", "a red apple", *_argv(base, changes)], Path(folder), Path("run"))


SCORE_FLAGS = {"image": HOSTILE_PATHS, "prompt": HOSTILE, "--against": HOSTILE,
               "--clip": HOSTILE | st.sampled_from(["local-dir:missing"])}  # fmt: skip


@PROPERTY
@given(changes=_overrides(SCORE_FLAGS))
def test_score_refuses_cleanly_or_scores(tiny_clip_spec: str, changes: dict) -> None:
    image, prompt = changes.pop("image", "good.png"), changes.pop("prompt", "a red square")
    with tempfile.TemporaryDirectory() as folder, contextlib.chdir(folder):
        _playground(Path(folder))
        argv = ["score", image, prompt, *_argv({"--clip": tiny_clip_spec}, changes)]
        check_outcome("score", argv, Path(folder), None)


@pytest.fixture(scope="module")
def captions_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pictures")
    for colour in ("red", "blue", "green", "yellow"):
        Image.new("RGB", (32, 32), colour).save(root / f"{colour}.png")
        (root / f"{colour}.txt").write_text(f"a {colour} square")
    return root


TRAIN_CLIP_FLAGS = {
    "--epochs": HOSTILE, "--batch-size": HOSTILE, "--lr": HOSTILE, "--warmup-steps": HOSTILE, "--seed": HOSTILE,
    "--checkpoint-every": HOSTILE, "--max-steps": HOSTILE, "--max-minutes": HOSTILE, "--threads": HOSTILE,
    "--precision": HOSTILE | st.sampled_from(["auto", "bf16", "fp32"]), "--export-dtype": HOSTILE | st.just("fp32"),
    "--split": HOSTILE | st.sampled_from(["a", "all"]), "--eval-split": HOSTILE | st.just(""),
    "--config": HOSTILE | st.sampled_from(["tiny", "{}", '{"embed_dim": 8}', "missing.json", "notes.txt"]),
    "--init": HOSTILE | st.sampled_from(["local-dir:missing"]),
}  # fmt: skip


@PROPERTY
@given(changes=_overrides(TRAIN_CLIP_FLAGS))
def test_train_clip_refuses_cleanly_or_trains(captions_folder: Path, changes: dict) -> None:
    changes = {flag: value for flag, value in changes.items() if not (flag == "--epochs" and value.isdigit()
                                                                       and int(value) > 4)}  # fmt: skip
    base = {"--config": "tiny", "--epochs": "1", "--batch-size": "4", "--eval-split": "", "--threads": "1",
            "--quiet": None, "--out": "out"}  # fmt: skip
    with tempfile.TemporaryDirectory() as folder, contextlib.chdir(folder):
        _playground(Path(folder))
        argv = ["train", "clip", captions_folder, *_argv(base, changes)]
        check_outcome("train clip", argv, Path(folder), Path("out"))


TRAIN_VQGAN_FLAGS = {
    "--size": HOSTILE, "--n-embed": HOSTILE, "--embed-dim": HOSTILE, "--ch": HOSTILE, "--num-res-blocks": HOSTILE,
    "--ch-mult": HOSTILE | st.sampled_from(["1,2", "1", "1,2,2,2,2,2,2,2,2", "0,1", "1,,2"]),
    "--disc-start": HOSTILE, "--disc-weight": HOSTILE, "--steps": HOSTILE, "--batch-size": HOSTILE, "--lr": HOSTILE,
    "--warmup-steps": HOSTILE, "--seed": HOSTILE, "--restart-every": HOSTILE, "--val-fraction": HOSTILE,
    "--sample-every": HOSTILE, "--checkpoint-every": HOSTILE, "--max-minutes": HOSTILE, "--threads": HOSTILE,
    "--precision": HOSTILE | st.just("fp32"), "--export-dtype": HOSTILE | st.just("fp16"),
}  # fmt: skip


@PROPERTY
@given(changes=_overrides(TRAIN_VQGAN_FLAGS))
def test_train_vqgan_refuses_cleanly_or_trains(captions_folder: Path, changes: dict) -> None:
    big = {"--size", "--n-embed", "--embed-dim", "--ch", "--num-res-blocks", "--steps", "--batch-size"}
    changes = {flag: value for flag, value in changes.items()
               if not (flag in big and value.isdigit() and int(value) > 64)}  # fmt: skip
    base = {"--size": "32", "--steps": "2", "--batch-size": "2", "--ch": "32", "--ch-mult": "1,2", "--n-embed": "16",
            "--embed-dim": "8", "--disc-start": "1", "--threads": "1", "--quiet": None, "--out": "out"}  # fmt: skip
    with tempfile.TemporaryDirectory() as folder, contextlib.chdir(folder):
        _playground(Path(folder))
        argv = ["train", "vqgan", captions_folder, *_argv(base, changes)]
        check_outcome("train vqgan", argv, Path(folder), Path("out"))


TRAIN_DIFFUSION_FLAGS = {
    "--size": HOSTILE, "--num-channels": HOSTILE, "--num-res-blocks": HOSTILE, "--num-head-channels": HOSTILE,
    "--channel-mult": HOSTILE | st.sampled_from(["1,2", "1", "0.5,1", "1,,2"]),
    "--attention-resolutions": HOSTILE | st.sampled_from(["8", "16,8", "", "3"]),
    "--steps": HOSTILE, "--batch-size": HOSTILE, "--lr": HOSTILE, "--ema": HOSTILE, "--seed": HOSTILE,
    "--sample-every": HOSTILE, "--checkpoint-every": HOSTILE, "--max-minutes": HOSTILE, "--threads": HOSTILE,
    "--precision": HOSTILE | st.just("fp32"),
}  # fmt: skip


@PROPERTY
@given(changes=_overrides(TRAIN_DIFFUSION_FLAGS))
def test_train_diffusion_refuses_cleanly_or_trains(captions_folder: Path, changes: dict) -> None:
    big = {"--size", "--num-channels", "--num-res-blocks", "--num-head-channels", "--steps", "--batch-size"}
    changes = {flag: value for flag, value in changes.items()
               if not (flag in big and value.isdigit() and int(value) > 64)}  # fmt: skip
    base = {"--size": "16", "--num-channels": "32", "--num-res-blocks": "1", "--channel-mult": "1,2",
            "--attention-resolutions": "8", "--num-head-channels": "32", "--steps": "2", "--batch-size": "2",
            "--sample-every": "100", "--precision": "fp32", "--threads": "1", "--quiet": None,
            "--out": "out"}  # fmt: skip
    with tempfile.TemporaryDirectory() as folder, contextlib.chdir(folder):
        _playground(Path(folder))
        argv = ["train", "diffusion", captions_folder, *_argv(base, changes)]
        check_outcome("train diffusion", argv, Path(folder), Path("out"))


DATA_FLAGS = {"--size": HOSTILE, "--seed": HOSTILE, "--split": HOSTILE, "--synthetic": HOSTILE, "--mix": HOSTILE,
              "--openclipart-root": HOSTILE_PATHS, "--emoji-font": HOSTILE_PATHS}  # fmt: skip


@PROPERTY
@given(changes=_overrides(DATA_FLAGS))
def test_data_clipart_refuses_cleanly_or_builds(changes: dict) -> None:
    changes = {flag: value for flag, value in changes.items()
               if not (flag in ("--synthetic", "--size") and value.isdigit() and int(value) > 64)}  # fmt: skip
    base = {"--synthetic": "4", "--size": "16", "--quiet": None}
    with tempfile.TemporaryDirectory() as folder, contextlib.chdir(folder):
        _playground(Path(folder))
        argv = ["data", "clipart", "corpus", *_argv(base, changes)]
        check_outcome("data clipart", argv, Path(folder), Path("corpus"))


MODEL_NAMES = HOSTILE | st.sampled_from(["bundled:guide", "bundled:nope", "local-dir:missing", "local-dir:.",
                                         "hf-hub:", "hf-hub:a/b", "ViT-B-32:nope", "ViT-B-32:openai", ":", "local:x"])


@PROPERTY
@given(name=MODEL_NAMES)
def test_models_download_refuses_cleanly_or_verifies(name: str) -> None:
    """Offline (the tests never reach a network): a name is refused with one line, or found already whole."""
    with tempfile.TemporaryDirectory() as folder, contextlib.chdir(folder):
        _playground(Path(folder))
        check_outcome("models download", ["models", "download", name], Path(folder), None)


# --------------------------------------------------------------------------------------------- Stable Diffusion
@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny random diffusers pipeline and TAESD (tests/sd_tiny.py), outside the folders the cases write in."""
    from sd_tiny import make_tiny_autoencoder, make_tiny_pipeline

    root = tmp_path_factory.mktemp("tiny-sd")
    return make_tiny_pipeline(root / "pipeline"), make_tiny_autoencoder(root / "taesd")


SD_FLAGS: dict[str, st.SearchStrategy] = {
    "--size": st.tuples(HOSTILE, HOSTILE) | st.sampled_from([("16", "16"), ("24", "16"), ("20", "16")]),
    "--steps": HOSTILE, "--guidance": HOSTILE, "--seed": HOSTILE, "--batch": HOSTILE, "--strength": HOSTILE,
    "--save-every": HOSTILE, "--fps": HOSTILE, "--negative": HOSTILE,
    "--sampler": HOSTILE | st.sampled_from(["Euler a", "dpm++ 2m karras", "DDIM", "LCM", "Heun", "k_lms"]),
    "--preview": HOSTILE | st.sampled_from(["taesd", "vae", "none"]),
    "--decoder": HOSTILE | st.sampled_from(["vae", "taesd"]),
    "--precision": HOSTILE | st.sampled_from(["auto", "bf16", "fp32"]),
    "--init-image": HOSTILE_PATHS, "--video": st.just(None), "--gif": st.just(None),
    "--model": HOSTILE | st.sampled_from(["sd-turbo", "local:missing", "local:notes.txt", "bundled:nope", "hf-hub:x"]),
    "--tiny-decoder": HOSTILE | st.sampled_from(["taesd", "local:missing", ""]),
}  # fmt: skip
SD_COSTLY = {"--steps", "--batch", "--save-every"}


@PROPERTY
@given(changes=_overrides(SD_FLAGS))
def test_sd_refuses_cleanly_or_draws(tiny_sd: tuple[Path, Path], changes: dict) -> None:
    changes = {flag: value for flag, value in changes.items()
               if not (flag in SD_COSTLY and value.isdigit() and int(value) > 8)
               and not (flag == "--size" and all(side.isdigit() for side in value)
                        and max(map(int, value)) > 64)}  # fmt: skip
    pipeline, taesd = tiny_sd
    base = {"--model": f"local:{pipeline}", "--tiny-decoder": f"local:{taesd}", "--size": ("16", "16"),
            "--steps": "2", "--precision": "fp32", "--quiet": None, "--out": "run"}  # fmt: skip
    with tempfile.TemporaryDirectory() as folder, contextlib.chdir(folder):
        _playground(Path(folder))
        check_outcome("sd", ["sd", "a red apple", *_argv(base, changes)], Path(folder), Path("run"))


def _or_hostile(*valid: str) -> st.SearchStrategy:
    """Valid values half the time: with few cases, some must finish."""
    return st.sampled_from(valid) | HOSTILE


TRAIN_SD_FLAGS: dict[str, st.SearchStrategy] = {
    "--size": _or_hostile("16", "32"), "--block-out-channels": _or_hostile("32,32", "32", "32,64,64", "31,32"),
    "--layers-per-block": _or_hostile("1", "2"), "--head-channels": _or_hostile("32", "16"),
    "--steps": _or_hostile("1", "3"), "--batch-size": _or_hostile("1", "3"), "--lr": _or_hostile("1e-4", "0.01"),
    "--warmup-steps": _or_hostile("0", "5"), "--ema": _or_hostile("0", "0.9"), "--snr-gamma": _or_hostile("0", "1"),
    "--caption-dropout": _or_hostile("0", "1"), "--seed": _or_hostile("0", "7"),
    "--precision": _or_hostile("auto", "bf16", "fp32"), "--prediction": _or_hostile("epsilon", "v_prediction"),
    "--split": _or_hostile("a", "b", "test", "all"),
    "--init": HOSTILE | st.sampled_from(["sd-turbo", "local:missing", "bundled:nope"]),
    "--max-minutes": _or_hostile("10", "0.5"), "--threads": _or_hostile("1"),
}  # fmt: skip
FEW = settings(PROPERTY, max_examples=max(PROPERTY.max_examples // 4, 4))
"""Each finished ``train sd`` case converts the bundled guide and VQGAN (seconds): fewer cases."""


@FEW
@given(changes=_overrides(TRAIN_SD_FLAGS))
def test_train_sd_refuses_cleanly_or_trains(captions_folder: Path, changes: dict) -> None:
    big = {"--size", "--layers-per-block", "--steps", "--batch-size", "--head-channels", "--threads"}
    changes = {flag: value for flag, value in changes.items()
               if not (flag in big and value.isdigit() and int(value) > 64)}  # fmt: skip
    base = {"--size": "32", "--block-out-channels": "32,32", "--steps": "2", "--batch-size": "2",
            "--sample-every": "100", "--threads": "1", "--quiet": None, "--out": "out"}  # fmt: skip
    with tempfile.TemporaryDirectory() as folder, contextlib.chdir(folder):
        _playground(Path(folder))
        check_outcome("train sd", ["train", "sd", captions_folder, *_argv(base, changes)], Path(folder), Path("out"))


# --------------------------------------------------------------------------------------------- stored settings
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True, allow_infinity=True)
    | st.integers(-2, 8) | st.floats(-1, 4) | st.text(max_size=8)
    | st.sampled_from(["", "nan", "64", "none", "fp32", "adam", "pixel", "gradient"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=2),
    max_leaves=4,
)  # fmt: skip
FIELDS = sorted(field.name for field in dataclasses.fields(GenerateSettings))  # not PANELS, a ClassVar
COSTLY = {"iterations", "width", "height", "cutn", "story_every", "zoom_every"}
"""Fields whose valid values can make a run long: kept to values a test can afford when they are numbers."""


def _affordable(name: str, value) -> bool:
    if name in COSTLY and isinstance(value, int | float) and not isinstance(value, bool):
        return value <= 32 and value != -1
    return not (name == "clip_models" and isinstance(value, list) and value)  # a real model name list: see --clip


@pytest.fixture(scope="module")
def stopped_run(tiny_clip_spec: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    class StopAt2:
        def __call__(self, report) -> None:
            if report.step == 2:
                raise KeyboardInterrupt

    settings = GenerateSettings(prompts=["a red apple"], clip_models=[tiny_clip_spec], width=24, height=24, cutn=2,
                                iterations=4, save_every=2, seed=1)  # fmt: skip
    return generate(settings, tmp_path_factory.mktemp("stopped") / "run", on_step=StopAt2()).run_dir


def _stored_json(value) -> str:
    return json.dumps(value, allow_nan=True)


@PROPERTY
@given(name=st.sampled_from(FIELDS), value=JSON_VALUES)
def test_from_png_with_any_stored_value_refuses_cleanly_or_draws(stopped_run: Path, name: str, value) -> None:
    if not _affordable(name, value):
        return
    stored = json.loads((stopped_run / rundir.RUN_JSON).read_text())["settings"]
    stored[name] = value
    with tempfile.TemporaryDirectory() as folder, contextlib.chdir(folder):
        _playground(Path(folder))
        info = PngImagePlugin.PngInfo()
        info.add_itxt(png.METADATA_KEY, _stored_json({"version": "0", "step": 0, "settings": stored}))
        Image.new("RGB", (8, 8)).save("made.png", pnginfo=info)
        argv = ["generate", "--from", "made.png", "--out", "run", "--quiet"]
        check_outcome("generate --from", argv, Path(folder), Path("run"))


@PROPERTY
@given(name=st.sampled_from(FIELDS), value=JSON_VALUES)
@example(name="iterations", value=6)  # the one setting resume may change: it must finish
@example(name="gif", value=False)  # an "edit" to the value it already has
def test_resume_with_any_edited_value_refuses_cleanly_or_finishes(stopped_run: Path, name: str, value) -> None:
    if not _affordable(name, value):
        return
    with tempfile.TemporaryDirectory() as folder, contextlib.chdir(folder):
        run = Path(folder) / "run"
        for source in stopped_run.rglob("*"):
            target = run / source.relative_to(stopped_run)
            if source.is_dir():
                target.mkdir(parents=True, exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(source.read_bytes())
        stored = json.loads((run / rundir.RUN_JSON).read_text())
        stored["settings"][name] = value
        (run / rundir.RUN_JSON).write_text(_stored_json(stored))
        check_outcome("resume", ["resume", "run", "--quiet"], Path(folder), Path("run"))


def test_the_property_tests_saw_both_outcomes() -> None:
    """A property that only ever saw refusals (or only runs) would prove little: both must have happened."""
    if len(OUTCOMES) < 11:
        pytest.skip("run with the whole module")
    for command in ("generate", "train clip", "train vqgan", "train diffusion", "resume", "generate --from", "sd",
                    "train sd"):  # fmt: skip
        assert OUTCOMES[command]["refused"] > 0 and OUTCOMES[command]["finished"] > 0, (command, OUTCOMES[command])
