"""``dreamcanvas batch`` and the job runner under it: one run folder per line, reruns that skip and resume,
failures that stay with their line, workers that draw the same pictures as one process."""

from __future__ import annotations

import html
import json
from pathlib import Path

import pytest
from helpers import one_error_line, run_cli, tree

from dreamcanvas.cli import main
from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.jobs import JobRunner, JobState
from dreamcanvas.jobs.batch import run_batch
from dreamcanvas.jobs.job import describe_error
from dreamcanvas.outputs import png
from dreamcanvas.settings import GenerateSettings

TRICKY = 'a <b>green</b> & "tall" tree'
PROMPTS = f"# three titles\n\na red apple\na blue sea\n   \n{TRICKY}\n"
"""Lines 3, 4 and 6 are prompts: their line numbers are their seeds and their folders' numbers."""
IDS = ["003-a-red-apple", "004-a-blue-sea", "006-a-b-green-b-tall-tree"]


def batch_args(clip_spec: str, prompts: Path, out: Path, *extra: str) -> list[str]:
    return ["batch", str(prompts), "--clip", clip_spec, "--size", "16", "16", "--cutn", "2", "-i", "3", "--quiet",
            "--out", str(out), *extra]  # fmt: skip


def tiny_batch_settings(clip_spec: str) -> GenerateSettings:
    """The settings ``batch_args`` gives every line (the prompt and seed are the batch's)."""
    return GenerateSettings(clip_models=[clip_spec], width=16, height=16, cutn=2, iterations=3)


def write_prompts(folder: Path, text: str = PROMPTS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "prompts.txt"
    path.write_text(text, encoding="utf-8")
    return path


def finals(out: Path, ids: list[str] = IDS) -> dict[str, bytes]:
    return {job_id: (out / "jobs" / job_id / "final.png").read_bytes() for job_id in ids}


def jobs_of(out: Path) -> list[dict]:
    return json.loads((out / "batch.json").read_text())["jobs"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, tiny_clip_spec: str) -> Path:
    """The three-line batch, run once straight through in this process: what every other run must equal."""
    folder = tmp_path_factory.mktemp("reference")
    out = folder / "batch"
    try:
        main(batch_args(tiny_clip_spec, write_prompts(folder), out))
    except SystemExit as done:
        assert done.code in (0, None), done.code
    return out


def test_batch_draws_every_line_with_a_contact_sheet_and_a_gallery(reference: Path) -> None:
    jobs = jobs_of(reference)
    assert [job["id"] for job in jobs] == IDS
    assert [job["prompt"] for job in jobs] == ["a red apple", "a blue sea", TRICKY]
    assert [job["state"] for job in jobs] == ["done"] * 3 and all(job["error"] is None for job in jobs)
    for job in jobs:  # each line's own fixed seed, its line number, stored in its picture
        stored = png.read_metadata(reference / job["folder"] / "final.png", "generate")
        assert stored["settings"]["seed"] == job["seed"] == job["line"]
        assert stored["settings"]["prompts"] == [job["prompt"]] and stored["step"] == 3

    page = (reference / "index.html").read_text(encoding="utf-8")
    assert html.escape(TRICKY, quote=True) in page and TRICKY not in page
    for job_id in IDS:
        assert f'href="jobs/{job_id}/"' in page and f'src="jobs/{job_id}/final.png"' in page

    from PIL import Image

    with Image.open(reference / "contact-sheet.png") as sheet:  # 2 x 2 grid; a caption (dark text) under each
        assert sheet.size[0] > 2 * 16 and sheet.size[1] > 2 * 16
        captions = sheet.convert("L").crop((0, 200, sheet.size[0] // 2, 240))
        assert min(captions.get_flattened_data()) < 128


def test_a_rerun_skips_finished_jobs_and_touches_no_picture(reference: Path, tiny_clip_spec: str, capsys) -> None:
    pictures = [reference / "jobs" / job_id / "final.png" for job_id in IDS]
    before = [(path.read_bytes(), path.stat().st_mtime_ns) for path in pictures]
    code, out, err = run_cli(batch_args(tiny_clip_spec, reference.parent / "prompts.txt", reference), capsys)
    assert code == 0, err
    assert [(path.read_bytes(), path.stat().st_mtime_ns) for path in pictures] == before
    assert [(job["state"], job["action"]) for job in jobs_of(reference)] == [("done", "skip")] * 3
    assert out.splitlines() == [str(reference / "contact-sheet.png"), str(reference / "index.html")]


def test_a_stopped_batch_resumes_to_the_pictures_of_an_uninterrupted_one(
    tmp_path: Path, reference: Path, tiny_clip_spec: str
) -> None:
    prompts, out = write_prompts(tmp_path), tmp_path / "batch"
    settings = tiny_batch_settings(tiny_clip_spec)

    def stop_in_the_second_job(status) -> None:
        if status.id == IDS[1] and status.step == 2:
            raise KeyboardInterrupt

    report = run_batch(prompts, settings, out, on_update=stop_in_the_second_job)
    assert report.stopped
    assert [job.status.state for job in report.jobs] == [JobState.DONE, JobState.STOPPED, JobState.QUEUED]
    assert [job["state"] for job in jobs_of(out)] == ["done", "stopped", "queued"]
    assert (out / "jobs" / IDS[1] / "state.pt").is_file() and not (out / "jobs" / IDS[2]).exists()

    report = run_batch(prompts, settings, out)
    assert not report.stopped and not report.failed
    assert [str(job.status.action) for job in report.jobs] == ["skip", "resume", "start"]
    assert finals(out) == finals(reference)


def test_a_failing_line_fails_alone_as_one_line_of_the_report(tmp_path: Path, tiny_clip_spec: str, capsys) -> None:
    prompts = write_prompts(tmp_path, "a red apple\napple:abc\n")
    code, _, err = run_cli(batch_args(tiny_clip_spec, prompts, tmp_path / "batch"), capsys)
    assert code == 1, err
    assert "Traceback" not in err
    [line] = [line for line in err.splitlines() if "002-apple-abc" in line]
    assert line.startswith("failed: 002-apple-abc (line 2): weight 'abc' in prompt 'apple:abc' is not a number")
    jobs = jobs_of(tmp_path / "batch")
    assert [job["state"] for job in jobs] == ["done", "failed"]
    assert jobs[1]["error"] in line and (tmp_path / "batch" / "jobs" / "001-a-red-apple" / "final.png").is_file()
    assert "failed: weight" in (tmp_path / "batch" / "index.html").read_text()
    # any other exception is its type and message, on one line
    assert describe_error(ValueError("bad\nvalue")) == "ValueError: bad value"


@pytest.mark.parametrize(
    "content",
    [None, b"", b"# only a comment\n\n   \n", b"a red apple\n\xff\xfe broken\n"],
    ids=["missing", "empty", "only-comments", "not-utf8"],
)
def test_a_bad_prompts_file_is_one_line_and_writes_nothing(
    tmp_path: Path, tiny_clip_spec: str, capsys, content: bytes | None
) -> None:
    prompts = tmp_path / "prompts.txt"
    if content is not None:
        prompts.write_bytes(content)
    before = tree(tmp_path)
    code, _, err = run_cli(batch_args(tiny_clip_spec, prompts, tmp_path / "batch"), capsys)
    one_error_line(code, err)
    assert str(prompts) in err
    assert tree(tmp_path) == before


def test_two_workers_draw_the_pictures_of_one(tmp_path: Path, reference: Path, tiny_clip_spec: str, capsys) -> None:
    first_two = PROMPTS.replace(f"{TRICKY}\n", "")  # the same line numbers, so the same seeds
    prompts = write_prompts(tmp_path, first_two)
    args = batch_args(tiny_clip_spec, prompts, tmp_path / "batch", "--workers", "2", "--threads", "1")
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    assert [job["state"] for job in jobs_of(tmp_path / "batch")] == ["done", "done"]
    assert finals(tmp_path / "batch", IDS[:2]) == finals(reference, IDS[:2])


def test_the_runner_addresses_jobs_by_id_and_stops_a_queued_one(tmp_path: Path, tiny_clip_spec: str) -> None:
    seen: list[tuple[str, str]] = []
    runner = JobRunner(tmp_path, on_update=lambda status: seen.append((status.id, str(status.state))))
    settings = tiny_batch_settings(tiny_clip_spec).replace(prompts=["a red apple"], seed=1, iterations=1)
    first, second = runner.submit("generate", settings), runner.submit("generate", settings)
    assert (runner.position(first), runner.position(second)) == (0, 1)
    runner.stop(second)
    statuses = runner.run()
    assert [status.state for status in statuses] == [JobState.DONE, JobState.STOPPED]
    assert (runner.folder(first) / "final.png").is_file() and not runner.folder(second).exists()
    assert (first, "running") in seen and (first, "done") in seen
    for bad in ("../elsewhere", "a/b", ".hidden", ""):
        with pytest.raises(DreamcanvasError):
            runner.folder(bad)
