"""``sd``, ``style`` and ``upscale`` as job methods: the runner draws what each method's own API draws.

Nothing is downloaded and nothing is faked: a tiny random diffusers pipeline in the real folder layout
(tests/sd_tiny.py), a random VGG-19 in the released file layout and a random SRVGGNetCompact
(tests/helpers.py), all loaded by the real loaders as ``local:`` paths. Pictures are compared byte for byte in
fp32, where the arithmetic is the same on every run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import offline_hub, random_compact, random_vgg19, tree
from PIL import Image
from sd_tiny import make_tiny_pipeline

from dreamcanvas.errors import DreamcanvasWarning
from dreamcanvas.jobs import Action, JobRunner, JobState, JobStatus, method_named
from dreamcanvas.jobs.methods import available_methods
from dreamcanvas.outputs import rundir
from dreamcanvas.records import SettingsRecord
from dreamcanvas.sd.settings import SDSettings
from dreamcanvas.style.settings import StyleSettings
from dreamcanvas.upscale.settings import UpscaleSettings


# ------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    return {
        "sd": make_tiny_pipeline(folder / "tiny-sd"),
        "vgg": random_vgg19(folder / "vgg19-d01eb7cb.pth"),
        "compact": random_compact(folder / "compact-x2.pth"),
    }


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 48x40 gradient to draw in a style or upscale, and a noisy red style picture."""
    folder = tmp_path_factory.mktemp("pictures")
    y, x = np.mgrid[0:40, 0:48]
    found = {"content": folder / "content.png", "style": folder / "red.png", "small": folder / "small.png"}
    Image.fromarray(np.stack([x * 5, y * 6, 200 - x * 2], axis=-1).astype(np.uint8)).save(found["content"])
    noise = np.random.default_rng(0).random((48, 48, 3)) * np.array((255, 50, 40))
    Image.fromarray(noise.astype(np.uint8)).save(found["style"])
    Image.open(found["content"]).resize((20, 14), Image.Resampling.BICUBIC).save(found["small"])
    return found


@pytest.fixture(autouse=True)
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test may download: an empty, offline HF cache and dreamcanvas cache."""
    return offline_hub(tmp_path / "hub", monkeypatch)


@dataclass(frozen=True)
class Case:
    """One method's job: its settings, and the method's own API drawing them into a new folder."""

    method: str
    settings: SettingsRecord
    draw: Callable[[Any, Path], object]

    @property
    def files(self) -> list[str]:
        return method_named(self.method).finished_files(self.settings)


def sd_case(models: dict[str, Path], pictures: dict[str, Path]) -> Case:
    from dreamcanvas.sd.run import draw_run

    settings = SDSettings(prompt="a red apple", model=f"local:{models['sd']}", steps=2, width=32, height=32,
                          seed=7, precision="fp32", preview="vae")  # fmt: skip
    return Case("sd", settings, draw_run)


def style_case(models: dict[str, Path], pictures: dict[str, Path]) -> Case:
    from dreamcanvas.style.run import stylize

    settings = StyleSettings(content=str(pictures["content"]), styles=[str(pictures["style"])],
                             vgg=f"local:{models['vgg']}", sizes=(32, 48), iterations=2, save_every=1,
                             precision="fp32", seed=5)  # fmt: skip
    return Case("style", settings, stylize)


def upscale_case(models: dict[str, Path], pictures: dict[str, Path]) -> Case:
    from dreamcanvas.upscale.run import upscale_run

    # 20x14 in 8-pixel tiles: 6 steps; --scale 0 is left to the run (the model's own factor)
    settings = UpscaleSettings(image=str(pictures["small"]), model=f"local:{models['compact']}", tile=8, tile_pad=2,
                               precision="fp32")  # fmt: skip
    return Case("upscale", settings, upscale_run)


CASES = {"sd": sd_case, "style": style_case, "upscale": upscale_case}


@pytest.fixture(params=sorted(CASES))
def case(request: pytest.FixtureRequest, models: dict[str, Path], pictures: dict[str, Path]) -> Case:
    return CASES[request.param](models, pictures)


def run_one(runner: JobRunner, method: str, settings: SettingsRecord, job_id: str = "job") -> JobStatus:
    runner.submit(method, settings, job_id)
    [status] = [one for one in runner.run() if one.id == job_id]
    return status


def stop_at_step_one(runner: JobRunner) -> Callable[[JobStatus], None]:
    """An ``on_update`` that stops a job as its first step is reported, as the studio's Stop button does."""

    def on_update(status: JobStatus) -> None:
        if status.state is JobState.RUNNING and status.step == 1:
            runner.stop(status.id)

    return on_update


def run_json(folder: Path) -> dict[str, Any]:
    return json.loads((folder / rundir.RUN_JSON).read_text())


def same_pictures(folder: Path, other: Path, names: list[str]) -> bool:
    return all((folder / name).read_bytes() == (other / name).read_bytes() for name in names)


def files_and_times(folder: Path) -> dict[str, tuple[bytes | str, int]]:
    """Every path under ``folder`` with its content and modification time: to prove nothing was touched."""
    return {name: (content, (folder / name).stat().st_mtime_ns) for name, content in tree(folder).items()}


# ------------------------------------------------------------------------------------------------- jobs
def test_a_job_draws_what_the_method_draws_and_a_rerun_skips_it_untouched(tmp_path: Path, case: Case) -> None:
    runner = JobRunner(tmp_path / "jobs")
    status = run_one(runner, case.method, case.settings)
    assert (status.state, status.action, status.error) == (JobState.DONE, Action.START, None)
    folder = runner.folder("job")
    case.draw(case.settings, tmp_path / "direct")
    assert same_pictures(folder, tmp_path / "direct", case.files)
    stored = run_json(folder)
    assert stored["completed"] is True
    assert stored["step"] == status.step == method_named(case.method).total_steps(case.settings)

    before = files_and_times(folder)
    again = run_one(runner, case.method, case.settings)
    assert (again.state, again.action) == (JobState.DONE, Action.SKIP)
    assert files_and_times(folder) == before


def test_a_stopped_job_run_again_ends_on_the_pictures_of_a_straight_run(tmp_path: Path, case: Case) -> None:
    """Stopped at step 1, from the progress hook; run again: style resumes, sd and upscale start over. The seed
    (sd, style), the method (style: auto) and the factor (upscale: --scale 0) are left to the run: the same job."""
    settings = case.settings.replace(seed=-1) if case.method == "sd" else case.settings
    if case.method == "style":
        settings = settings.replace(seed=-1, method="auto")
    runner = JobRunner(tmp_path / "jobs")
    runner.on_update = stop_at_step_one(runner)
    stopped = run_one(runner, case.method, settings)
    folder = runner.folder("job")
    assert (stopped.state, stopped.step) == (JobState.STOPPED, 1)
    assert run_json(folder)["completed"] is False
    if case.method == "sd":  # a preview frame was written: the folder is not an empty one
        assert rundir.list_frames(folder)

    again = run_one(JobRunner(tmp_path / "jobs"), case.method, settings)
    assert (again.state, again.error) == (JobState.DONE, None)
    assert again.action is (Action.RESUME if case.method == "style" else Action.START)
    made = method_named(case.method).settings(run_json(folder)["settings"], "run.json")
    case.draw(made, tmp_path / "straight")
    assert same_pictures(folder, tmp_path / "straight", case.files)


@pytest.mark.parametrize(("method", "field"), [("sd", "init_image"), ("style", "content"), ("upscale", "image")])
def test_a_job_with_a_missing_picture_fails_in_one_line_and_leaves_no_folder(
    tmp_path: Path, models: dict[str, Path], pictures: dict[str, Path], method: str, field: str
) -> None:
    missing = tmp_path / "missing.png"
    settings = CASES[method](models, pictures).settings.replace(**{field: str(missing)})
    runner = JobRunner(tmp_path / "jobs")
    status = run_one(runner, method, settings)
    assert status.state is JobState.FAILED and status.error is not None
    assert "\n" not in status.error and "missing.png" in status.error
    assert not runner.folder("job").exists()


def test_a_stopped_folder_with_files_no_run_writes_is_refused_and_kept(
    tmp_path: Path, models: dict[str, Path], pictures: dict[str, Path]
) -> None:
    case = sd_case(models, pictures)
    runner = JobRunner(tmp_path / "jobs")
    runner.on_update = stop_at_step_one(runner)
    assert run_one(runner, case.method, case.settings).state is JobState.STOPPED
    folder = runner.folder("job")
    (folder / "notes.txt").write_text("mine")
    before = tree(folder)
    refused = run_one(JobRunner(tmp_path / "jobs"), case.method, case.settings)
    assert refused.state is JobState.FAILED and "notes.txt" in refused.error and "\n" not in refused.error
    assert tree(folder) == before


def test_style_auto_without_vgg_draws_fast_once_and_the_same_job_then_skips(
    tmp_path: Path, pictures: dict[str, Path]
) -> None:
    """Offline without VGG-19 weights, ``auto`` draws with the fast network: asked again, still the same job."""
    settings = StyleSettings(content=str(pictures["content"]), styles=[str(pictures["style"])], precision="fp32")
    runner = JobRunner(tmp_path / "jobs")
    with pytest.warns(DreamcanvasWarning, match="--method fast"):
        status = run_one(runner, "style", settings)
    assert (status.state, status.step) == (JobState.DONE, 1)
    stored = run_json(runner.folder("job"))
    assert (stored["settings"]["method"], stored["step"]) == ("fast", 1)
    assert run_one(runner, "style", settings).action is Action.SKIP


# ------------------------------------------------------------------------------------------------- the methods
def test_every_method_is_available() -> None:
    assert set(available_methods()) == {"generate", "sd", "style", "upscale", "dalle"}


def test_what_a_run_fills_in_is_the_same_job_and_anything_else_is_not(
    models: dict[str, Path], pictures: dict[str, Path]
) -> None:
    sd, upscale = method_named("sd"), method_named("upscale")
    made = sd_case(models, pictures).settings
    assert sd.changes(made, made.replace(seed=-1)) == []
    assert sd.changes(made, made.replace(seed=8)) == ["seed 7 -> 8"]
    assert sd.total_steps(made.replace(sampler="Heun", steps=3)) == 5
    assert sd.total_steps(made.replace(init_image="x.png", steps=4, strength=0.5)) == 2
    assert sd.finished_files(made.replace(batch=2, upscale=4)) == [
        "final-1.png", "final-2.png", "final-1-x4.png", "final-2-x4.png"
    ]  # fmt: skip
    asked = UpscaleSettings(image="a.png", scale=2)
    fell_back = asked.replace(model="RealESRGAN_x4plus", scale=4, outscale=2.0)
    assert upscale.changes(fell_back, asked) == []
    assert upscale.changes(asked.replace(model="RealESRGAN_x2plus"), asked) == []
    assert upscale.changes(fell_back, asked.replace(scale=4)) != []
