"""The studio without its browser page: forms, safety, runs by id, the service over the real job runner.

* forms: every settings record as a form (fields in order, the CLI's flags as labels, help, defaults that come
  back as the record's defaults, bad values as one line naming the flag);
* safety: model names only (paths only when allowed), uploads checked and stored again as fresh PNGs;
* runs: addressed by id only, never a path, a link or a damaged folder;
* the service: jobs from a tab's values drawn by the real engine with a tiny random CLIP in a worker process,
  byte for byte what ``engine.generate`` draws; stop and resume, make again from a PNG, the queue's order, a
  worker process killed under a job;
* ``dreamcanvas studio``'s own settings: no listening beyond 127.0.0.1 without a password.
"""

from __future__ import annotations

import dataclasses
import hashlib
import multiprocessing
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from helpers import one_error_line, pixels, run_cli, tree
from PIL import Image, PngImagePlugin

import dreamcanvas.studio.server
from dreamcanvas import engine
from dreamcanvas.cli import app
from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.jobs import JobState
from dreamcanvas.outputs import rundir
from dreamcanvas.records import SettingsRecord
from dreamcanvas.sd.settings import SDSettings
from dreamcanvas.settings import GenerateSettings
from dreamcanvas.studio.forms import form_fields, page_value, settings_from_form
from dreamcanvas.studio.runs import list_runs, read_run, run_folder
from dreamcanvas.studio.safety import Safety, UploadLimits
from dreamcanvas.studio.service import Snapshot, Studio, StudioConfig
from dreamcanvas.studio.settings import AUTH_ENVIRONMENT, StudioSettings
from dreamcanvas.style.settings import StyleSettings
from dreamcanvas.upscale.settings import UpscaleSettings

SEED = 7
PROMPT = "a red apple"
WAIT_SECONDS = 90.0
"""Longest wait for a job: the first one in a fresh worker process spends ~8 s on spawning and imports."""


def one_line(error: pytest.ExceptionInfo[DreamcanvasError]) -> str:
    message = str(error.value)
    assert message and "\n" not in message, message
    return message


# ============================================================================================= forms
COMMANDS = {GenerateSettings: "generate", SDSettings: "sd", StyleSettings: "style", UpscaleSettings: "upscale"}
REQUIRED: dict[type[SettingsRecord], tuple[dict[str, Any], dict[str, Any]]] = {
    GenerateSettings: ({"prompts": PROMPT}, {"prompts": [PROMPT]}),
    SDSettings: ({"prompt": PROMPT}, {"prompt": PROMPT}),
    StyleSettings: ({"content": "content.png", "styles": ["style.png"]}, {"content": "content.png",
                                                                          "styles": ["style.png"]}),
    UpscaleSettings: ({"image": "small.png"}, {"image": "small.png"}),
}  # fmt: skip
"""What each record cannot do without (a prompt, a picture): as the page sends it, and as the record holds it."""
RECORDS = list(COMMANDS)


def default_page(record: type[SettingsRecord], **changes: Any) -> list[Any]:
    """A tab as it first shows (every field at its default), with ``changes`` typed in."""
    fields = form_fields(record)
    values = {field.name: page_value(field, field.default) for field in fields}
    values.update(changes)
    return [values[field.name] for field in fields]


def cli_parameters(command: str) -> tuple[set[str], int]:
    """The flags of ``dreamcanvas COMMAND`` as click parses them, and how many positional arguments it takes."""
    from dreamcanvas.cli import _register_commands

    _register_commands()
    params = typer.main.get_command(app).commands[command].params  # type: ignore[attr-defined]
    flags = {opt for param in params if param.param_type_name == "option" for opt in param.opts}
    return flags, sum(param.param_type_name == "argument" for param in params)


@pytest.mark.parametrize("record", RECORDS, ids=lambda record: record.__name__)
def test_a_form_has_every_field_in_order_labelled_by_the_cli_flag_with_help(record: type[SettingsRecord]) -> None:
    fields = form_fields(record)
    assert [field.name for field in fields] == [field.name for field in dataclasses.fields(record)]
    flags, arguments = cli_parameters(COMMANDS[record])
    assert all(field.help.strip() for field in fields), [field.name for field in fields if not field.help.strip()]
    assert {field.label for field in fields if field.label.startswith("--")} <= flags
    assert len({field.label for field in fields if not field.label.startswith("--")}) == arguments  # positionals


@pytest.mark.parametrize("record", RECORDS, ids=lambda record: record.__name__)
def test_the_defaults_shown_on_the_page_come_back_as_the_records_defaults(record: type[SettingsRecord]) -> None:
    """What a visitor gets by pressing Run on an untouched tab is what the CLI gets from no flags."""
    shown = default_page(record)
    assert all(value is None or type(value) in (str, bool, int, float, list) for value in shown), shown
    on_page, in_record = REQUIRED[record]
    made = settings_from_form(record, form_fields(record), default_page(record, **on_page))
    assert made == record(**in_record)
    assert made.to_dict() == record(**in_record).to_dict()


@pytest.mark.parametrize("record", RECORDS, ids=lambda record: record.__name__)
def test_a_required_value_left_empty_is_one_line_naming_it(record: type[SettingsRecord]) -> None:
    fields = form_fields(record)
    missing = next(iter(REQUIRED[record][0]))
    on_page = {name: value for name, value in REQUIRED[record][0].items() if name != missing}
    with pytest.raises(DreamcanvasError) as error:
        settings_from_form(record, fields, default_page(record, **on_page))
    label = next(field.label for field in fields if field.name == missing)
    message = one_line(error)
    assert label in message or "nothing to draw" in message, message


@pytest.mark.parametrize(
    ("name", "value", "flag"),
    [("width", "abc", "--size"), ("iterations", 0, "--iterations"), ("cutn", "2.5", "--cutn"),
     ("augs", ["swirl"], "--augs"), ("lr", "-1", "--lr"), ("optimizer", "lbfgsx", "--optimizer")],
)  # fmt: skip
def test_a_bad_value_is_one_line_naming_the_flag_the_page_shows(name: str, value: Any, flag: str) -> None:
    fields = form_fields(GenerateSettings)
    with pytest.raises(DreamcanvasError) as error:
        settings_from_form(GenerateSettings, fields, default_page(GenerateSettings, prompts=PROMPT, **{name: value}))
    assert one_line(error).startswith(flag), str(error.value)


# ============================================================================================= safety
ALLOWED_MODEL = "local-dir:/models/allowed"


def picture_with_text_chunk(path: Path, size: tuple[int, int] = (24, 20)) -> Path:
    """A noisy PNG carrying a text chunk, which a fresh encoding must not carry over."""
    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "secret-of-the-uploader")
    noise = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(noise).save(path, pnginfo=info)
    return path


@pytest.fixture
def safety(tmp_path: Path) -> Safety:
    return Safety(tmp_path / "studio", frozenset([ALLOWED_MODEL]), UploadLimits(max_bytes=4096, max_side=32))


@pytest.mark.parametrize("spec", ["local-dir:/etc", "local:/x", "file:/x", "LOCAL-DIR:/etc", "../x", "a/../../b",
                                  "/etc/passwd", "local-dir:/models/allowed/../other"])  # fmt: skip
def test_a_model_named_by_a_path_is_refused_unless_allowed(safety: Safety, spec: str) -> None:
    with pytest.raises(DreamcanvasError) as error:
        safety.check_model("--clip", spec)
    message = one_line(error)
    assert message.startswith("--clip") and repr(spec) in message and "--allow-model" in message


@pytest.mark.parametrize("spec", ["ViT-B-32:openai", "bundled:guide", "hf-hub:org/repo", ALLOWED_MODEL])
def test_a_model_named_by_name_or_allowed_is_taken(safety: Safety, spec: str) -> None:
    assert safety.check_model("--clip", spec) == spec


def test_an_upload_is_stored_again_as_a_fresh_png_named_by_its_hash(safety: Safety, tmp_path: Path) -> None:
    original = picture_with_text_chunk(tmp_path / "holiday.png")
    before = original.read_bytes()
    stored = safety.store_upload("--init-image", original)
    assert stored.parent == safety.uploads and stored != original
    assert stored.name == hashlib.sha256(stored.read_bytes()).hexdigest()[:24] + ".png"
    assert np.array_equal(pixels(stored), pixels(original))
    assert b"secret-of-the-uploader" not in stored.read_bytes()  # re-encoded, not copied
    assert original.read_bytes() == before
    assert safety.store_upload("--init-image", original) == stored  # the same picture is kept once
    assert sorted(path.name for path in safety.uploads.iterdir()) == [stored.name]


def _text_as_png(folder: Path) -> Path:
    (folder / "notes.png").write_text("not a picture at all")
    return folder / "notes.png"


def _text_file(folder: Path) -> Path:
    (folder / "notes.txt").write_text("not a picture at all")
    return folder / "notes.txt"


def _too_wide(folder: Path) -> Path:
    Image.new("RGB", (40, 8), "red").save(folder / "wide.png")
    return folder / "wide.png"


def _too_heavy(folder: Path) -> Path:
    return picture_with_text_chunk(folder / "heavy.png", (40, 40))  # noise: ~5 KiB, over 4096 bytes


def _tiff_as_png(folder: Path) -> Path:
    Image.new("RGB", (8, 8), "red").save(folder / "photo.png", format="TIFF")
    return folder / "photo.png"


@pytest.mark.parametrize(
    ("make", "message"),
    [(_text_as_png, "notes.png is not a picture that can be read"), (_text_file, "notes.txt is not a picture"),
     (_too_wide, "wide.png is 40x8"), (_too_heavy, "heavy.png is 0.0 MiB; the studio takes pictures up to"),
     (_tiff_as_png, "photo.png is a TIFF file")],
    ids=["text-renamed-png", "txt", "over-max-side", "over-max-bytes", "tiff-renamed-png"],
)  # fmt: skip
def test_a_bad_upload_is_one_line_and_nothing_is_stored(
    safety: Safety, tmp_path: Path, make: Callable[[Path], Path], message: str
) -> None:
    upload = make(tmp_path)
    if make is _too_heavy:
        assert upload.stat().st_size > safety.limits.max_bytes
    with pytest.raises(DreamcanvasError) as error:
        safety.store_upload("--init-image", upload)
    shown = one_line(error)
    assert shown.startswith("--init-image") and message in shown, shown
    assert str(tmp_path) not in shown  # the server's own paths are not shown to a visitor
    assert not safety.uploads.exists()


def test_only_a_file_the_studio_stored_counts_as_a_stored_upload(safety: Safety, tmp_path: Path) -> None:
    original = picture_with_text_chunk(tmp_path / "holiday.png")
    stored = safety.store_upload("--init-image", original)
    assert safety.is_stored_upload(str(stored))
    link_inside = safety.uploads / "link.png"
    link_inside.symlink_to(stored)
    link_out = safety.uploads / "out.png"
    link_out.symlink_to(original)
    beside = shutil.copy(stored, safety.root / stored.name)
    nested = safety.uploads / "deeper" / stored.name
    nested.parent.mkdir()
    shutil.copy(stored, nested)
    for path in (link_inside, link_out, original, beside, nested, safety.uploads / "missing.png", safety.uploads):
        assert not safety.is_stored_upload(str(path)), path


# ============================================================================================= runs
def tiny_settings(clip_spec: str, iterations: int) -> GenerateSettings:
    return GenerateSettings(prompts=[PROMPT], clip_models=[clip_spec], width=16, height=16, cutn=2,
                            iterations=iterations, seed=SEED)  # fmt: skip


@pytest.fixture(scope="module")
def direct_run(tmp_path_factory: pytest.TempPathFactory, tiny_clip_spec: str) -> Path:
    """Five steps drawn by ``engine.generate`` in this process (one torch thread, as conftest sets)."""
    folder = tmp_path_factory.mktemp("direct") / "run"
    engine.generate(tiny_settings(tiny_clip_spec, 5), folder)
    return folder


@pytest.fixture
def runs_root(tmp_path: Path, direct_run: Path) -> Path:
    """A studio root with one good run, and real runs where a bad id would lead if it were followed."""
    root = tmp_path / "studio"
    shutil.copytree(direct_run, root / "good")
    shutil.copytree(direct_run, root / "uploads")  # the uploads folder, even holding a run.json, is not a run
    shutil.copytree(direct_run, tmp_path / "x")  # "../x"
    shutil.copytree(direct_run, root / "a" / "b")  # "a/b"
    shutil.copytree(direct_run, tmp_path / "elsewhere")
    (root / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (root / "empty").mkdir()
    return root


def test_a_run_is_read_by_its_id(runs_root: Path) -> None:
    assert run_folder(runs_root, "good") == runs_root / "good"
    view = read_run(runs_root, "good")
    assert (view.method, view.step, view.completed) == ("generate", 5, True)
    assert view.pictures == [runs_root / "good" / rundir.FINAL_NAME]
    assert view.settings["seed"] == SEED


@pytest.mark.parametrize("run_id", ["../x", "/etc", "a/b", "uploads", "linked", "empty", "", ".", "good/.."])
def test_anything_but_a_run_folder_right_under_the_root_is_refused(runs_root: Path, run_id: str) -> None:
    for read in (run_folder, read_run):
        with pytest.raises(DreamcanvasError) as error:
            read(runs_root, run_id)
        one_line(error)


@pytest.mark.parametrize(
    "damage",
    ["{not json", '{"settings": [], "step": 1}', '{"settings": {}, "step": "five"}', '{"settings": {}}', "[]", "",
     '{"settings": {"width": "wide"}, "step": 1, "method": "generate"}'],
)  # fmt: skip
def test_the_run_list_leaves_a_damaged_run_out(runs_root: Path, damage: str) -> None:
    (runs_root / "damaged").mkdir()
    (runs_root / "damaged" / rundir.RUN_JSON).write_text(damage)
    (runs_root / "no-utf8").mkdir()
    (runs_root / "no-utf8" / rundir.RUN_JSON).write_bytes(b"\xff\xfe{")
    shown = [view.id for view in list_runs(runs_root)]
    assert "good" in shown and "no-utf8" not in shown
    assert set(shown) <= {"good", "damaged"}  # a run.json that reads, with settings it fails, is listed not finished
    if "damaged" in shown:
        assert not read_run(runs_root, "damaged").completed


# ============================================================================================= the service
def page_values(studio: Studio, clip_spec: str, iterations: int) -> list[Any]:
    """The generate tab with a tiny run typed in: what a visitor's Run button sends."""
    fields = studio.fields["generate"]
    values = {field.name: page_value(field, field.default) for field in fields}
    values.update(prompts=PROMPT, clip_models=clip_spec, width=16, height=16, cutn=2, iterations=iterations,
                  seed=SEED)  # fmt: skip
    return [values[field.name] for field in fields]


def wait_until(studio: Studio, job_id: str, done: Callable[[Snapshot], bool]) -> Snapshot:
    deadline = time.monotonic() + WAIT_SECONDS
    while not done(snapshot := studio.snapshot(job_id)):
        assert time.monotonic() < deadline, f"{job_id} still {snapshot}"
        time.sleep(0.05)
    return snapshot


def wait_until_ended(studio: Studio, job_id: str) -> Snapshot:
    return wait_until(studio, job_id, lambda snapshot: snapshot.ended)


def new_studio(root: Path, clip_spec: str) -> Studio:
    return Studio(StudioConfig(root=root, threads=1, allowed_models=frozenset([clip_spec]), methods=("generate",)))


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory, tiny_clip_spec: str) -> Iterator[Studio]:
    """One studio for the module: its worker process is spawned (and imports torch) once."""
    studio = new_studio(tmp_path_factory.mktemp("studio") / "outputs", tiny_clip_spec)
    studio.start()
    yield studio
    studio.close(timeout=30)


@pytest.fixture(scope="module")
def finished_job(studio: Studio, tiny_clip_spec: str) -> tuple[str, Snapshot]:
    job_id = studio.submit("generate", page_values(studio, tiny_clip_spec, 5))
    return job_id, wait_until_ended(studio, job_id)


def test_a_job_from_the_page_draws_what_the_engine_draws(
    studio: Studio, finished_job: tuple[str, Snapshot], direct_run: Path, tiny_clip_spec: str
) -> None:
    assert studio.settings_from_page("generate", page_values(studio, tiny_clip_spec, 5)) == tiny_settings(
        tiny_clip_spec, 5
    )
    job_id, snapshot = finished_job
    assert snapshot.state is JobState.DONE, snapshot.error
    assert (snapshot.percent, snapshot.step, snapshot.total, snapshot.error) == (100, 5, 5, None)
    final = studio.root / job_id / rundir.FINAL_NAME
    assert snapshot.pictures == [final]
    assert final.read_bytes() == (direct_run / rundir.FINAL_NAME).read_bytes()
    assert job_id in [view.id for view in studio.runs()]


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"width": 0}, "--size must be an integer >= 1"), ({"clip_models": "local-dir:/tmp"}, "by name only"),
     ({"init_image": "/etc/passwd"}, "passwd is not a picture"), ({"prompts": ""}, "nothing to draw")],
)  # fmt: skip
def test_bad_input_is_one_line_from_submit_and_writes_nothing(
    studio: Studio, tiny_clip_spec: str, changes: dict[str, Any], message: str
) -> None:
    fields = studio.fields["generate"]
    values = dict(zip([field.name for field in fields], page_values(studio, tiny_clip_spec, 3), strict=True))
    values.update(changes)
    before, jobs = tree(studio.root), len(studio.queue())
    with pytest.raises(DreamcanvasError) as error:
        studio.submit("generate", [values[field.name] for field in fields])
    assert message in one_line(error)
    assert tree(studio.root) == before and len(studio.queue()) == jobs


def test_a_stopped_job_resumes_to_the_picture_of_a_straight_run(
    studio: Studio, tiny_clip_spec: str, tmp_path: Path
) -> None:
    job_id = studio.submit("generate", page_values(studio, tiny_clip_spec, 150))
    wait_until(studio, job_id, lambda snapshot: snapshot.step >= 1 or snapshot.ended)
    studio.stop(job_id)
    stopped = wait_until_ended(studio, job_id)
    assert stopped.state is JobState.STOPPED and 1 <= stopped.step < 150, stopped
    assert not studio.run(job_id).completed  # its final.png so far is kept, but it is not finished
    assert studio.resume(job_id) == job_id
    resumed = wait_until_ended(studio, job_id)
    assert resumed.state is JobState.DONE and resumed.percent == 100, resumed
    straight = engine.generate(tiny_settings(tiny_clip_spec, 150), tmp_path / "straight")
    assert (studio.root / job_id / rundir.FINAL_NAME).read_bytes() == straight.image_path.read_bytes()
    with pytest.raises(DreamcanvasError) as error:
        studio.resume(job_id)
    assert "nothing to resume" in one_line(error)


def test_a_dropped_picture_fills_the_tab_with_the_settings_that_made_it(
    studio: Studio, finished_job: tuple[str, Snapshot], tmp_path: Path
) -> None:
    job_id, _ = finished_job
    dropped = shutil.copy(studio.root / job_id / rundir.FINAL_NAME, tmp_path / "tmpab12cd.png")
    method, values = studio.remake_from_picture(dropped)
    assert method == "generate"
    remade = studio.settings_from_page(method, values)
    assert remade.to_dict() == studio.run(job_id).settings
    assert (remade.seed, remade.prompts) == (SEED, [PROMPT])
    assert studio.remake_from_run(job_id) == (method, values)


def test_the_queue_runs_jobs_in_the_order_they_were_submitted(studio: Studio, tiny_clip_spec: str) -> None:
    first = studio.submit("generate", page_values(studio, tiny_clip_spec, 150))
    wait_until(studio, first, lambda snapshot: snapshot.state is not JobState.QUEUED)
    waiting = [studio.submit("generate", page_values(studio, tiny_clip_spec, 3)) for _ in range(2)]
    assert studio.snapshot(first).state is JobState.RUNNING, "the first job ended before the others were queued"
    assert [studio.snapshot(job_id).position for job_id in waiting] == [0, 1]
    assert {job_id: studio.positions()[job_id] for job_id in [first, *waiting]} == dict(
        zip([first, *waiting], [None, 0, 1], strict=True)
    )
    ended: list[str] = []
    deadline = time.monotonic() + WAIT_SECONDS
    while len(ended) < 3:
        assert time.monotonic() < deadline, ended
        ended += [job_id for job_id in [first, *waiting] if job_id not in ended and studio.snapshot(job_id).ended]
        time.sleep(0.02)
    assert ended == [first, *waiting]
    assert [studio.snapshot(job_id).state for job_id in ended] == [JobState.DONE] * 3
    assert all((studio.root / job_id / rundir.FINAL_NAME).is_file() for job_id in ended)


def test_a_killed_worker_fails_its_job_alone_and_the_next_job_runs(tmp_path: Path, tiny_clip_spec: str) -> None:
    """The out-of-memory killer or a native crash takes the job's process, not the studio."""
    others = {process.pid for process in multiprocessing.active_children()}  # the module studio's worker
    studio = new_studio(tmp_path / "outputs", tiny_clip_spec)
    studio.start()
    try:
        doomed = studio.submit("generate", page_values(studio, tiny_clip_spec, 100_000))
        after = studio.submit("generate", page_values(studio, tiny_clip_spec, 3))
        wait_until(studio, doomed, lambda snapshot: snapshot.step >= 1 or snapshot.ended)
        workers = [process for process in multiprocessing.active_children() if process.pid not in others]
        assert len(workers) == 1, workers
        os.kill(workers[0].pid, signal.SIGKILL)
        failed = wait_until_ended(studio, doomed)
        assert failed.state is JobState.FAILED, failed
        assert failed.error is not None and "\n" not in failed.error and "worker process" in failed.error
        assert "died" in failed.error
        survivor = wait_until_ended(studio, after)
        assert survivor.state is JobState.DONE and survivor.pictures, survivor
    finally:
        studio.close(timeout=30)


# ============================================================================================= StudioSettings
@pytest.fixture
def no_auth_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv(AUTH_ENVIRONMENT, raising=False)
    return monkeypatch


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "::", "example.org"])
def test_listening_beyond_this_machine_without_a_password_is_refused(
    no_auth_environment: pytest.MonkeyPatch, host: str
) -> None:
    with pytest.raises(DreamcanvasError) as error:
        StudioSettings(host=host).validate()
    assert "--auth" in one_line(error) and AUTH_ENVIRONMENT in str(error.value)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_this_machine_only_needs_no_password(no_auth_environment: pytest.MonkeyPatch, host: str) -> None:
    StudioSettings(host=host).validate()


def test_a_password_opens_other_hosts(no_auth_environment: pytest.MonkeyPatch) -> None:
    settings = StudioSettings(host="0.0.0.0", auth="u:p")
    settings.validate()
    assert settings.credentials() == ("u", "p")


@pytest.mark.parametrize("host", ["0.0.0.0", "127.0.0.1"])
@pytest.mark.parametrize("auth", ["nocolon", ":p", "u:"])
def test_a_malformed_auth_is_refused_wherever_the_studio_listens(
    no_auth_environment: pytest.MonkeyPatch, host: str, auth: str
) -> None:
    with pytest.raises(DreamcanvasError) as error:
        StudioSettings(host=host, auth=auth).validate()
    assert "--auth must be USER:PASSWORD" in one_line(error)


def test_the_password_can_come_from_the_environment(no_auth_environment: pytest.MonkeyPatch) -> None:
    no_auth_environment.setenv(AUTH_ENVIRONMENT, "u:p")
    settings = StudioSettings(host="0.0.0.0")
    settings.validate()
    assert settings.credentials() == ("u", "p")
    no_auth_environment.setenv(AUTH_ENVIRONMENT, "nocolon")
    with pytest.raises(DreamcanvasError) as error:
        StudioSettings(host="0.0.0.0").validate()
    one_line(error)


@pytest.mark.parametrize(
    ("flags", "message"), [(["--host", "0.0.0.0"], "--auth"), (["--auth", "nocolon"], "USER:PASSWORD")]
)
def test_the_studio_command_refuses_in_one_line_before_making_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_auth_environment: pytest.MonkeyPatch,
    flags: list[str], message: str,
) -> None:  # fmt: skip
    launched: list[StudioSettings] = []
    no_auth_environment.setattr(dreamcanvas.studio.server, "launch", launched.append)  # never serve from a test
    outputs = tmp_path / "studio"
    code, out, err = run_cli(["studio", *flags, "--outputs", outputs], capsys)
    assert message in one_error_line(code, err) and out == ""
    assert not launched and not outputs.exists() and list(tmp_path.iterdir()) == []
