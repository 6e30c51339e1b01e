"""``dreamcanvas batch --ray``: each line a Ray task on a real Ray instance (private, on this machine), drawing
the very pictures of one process, its progress coming back, a stop checkpointing resumably, and a failing line
failing alone, as one line of the report."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import one_error_line, run_cli, tree
from test_batch import batch_args, finals, jobs_of, tiny_batch_settings, write_prompts

from dreamcanvas.cli.batch import _report
from dreamcanvas.jobs import JobState, JobStatus, ray_backend, runner
from dreamcanvas.jobs.batch import run_batch
from dreamcanvas.outputs import png

ray = pytest.importorskip("ray")

PROMPTS = "a red apple\napple:abc\n"
"""Line 1 draws; line 2 fails inside its task (its prompt's weight is not a number)."""
GOOD, BAD = "001-a-red-apple", "002-apple-abc"


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    """One private Ray instance for the module, started as ``--ray local`` starts one (2 CPUs, no dashboard);
    the batches below join it, as a process that called ``ray.init`` itself does, and it ends with the module."""
    session = ray_backend.connect(ray_backend.LOCAL, 2)
    yield
    session.close()
    assert not ray.is_initialized()


def only_on_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on this process refuses to run a job: whatever is drawn is drawn by a Ray worker."""

    def not_here(*args: object) -> None:
        raise AssertionError("a job ran in the test's process, not in a Ray worker")

    monkeypatch.setattr(runner, "run_job", not_here)
    monkeypatch.setattr(ray_backend, "run_job", not_here)  # this process's copy; the workers import their own


def watcher(seen: list[tuple[str, str, int, str | None]]):
    def watch(status: JobStatus) -> None:
        seen.append((status.id, str(status.state), status.step, status.action))

    return watch


def test_a_batch_on_ray_draws_the_pictures_of_one_process_and_its_failure_is_one_line(
    tmp_path: Path, tiny_clip_spec: str, capsys, monkeypatch, cluster: None
) -> None:
    prompts = write_prompts(tmp_path, PROMPTS)
    code, _, plain_err = run_cli(batch_args(tiny_clip_spec, prompts, tmp_path / "plain", "--threads", "1"), capsys)
    assert code == 1, plain_err
    [plain_line] = [line for line in plain_err.splitlines() if line.startswith("failed:")]
    only_on_ray(monkeypatch)

    seen: list[tuple[str, str, int, str | None]] = []
    settings = tiny_batch_settings(tiny_clip_spec)
    report = run_batch(prompts, settings, tmp_path / "ray", workers=2, threads=1, ray="local", on_update=watcher(seen))
    assert [job.status.state for job in report.jobs] == [JobState.DONE, JobState.FAILED]
    assert [job["state"] for job in jobs_of(tmp_path / "ray")] == ["done", "failed"]
    assert finals(tmp_path / "ray", [GOOD]) == finals(tmp_path / "plain", [GOOD])
    steps = [step for job_id, state, step, _ in seen if job_id == GOOD and state == "running" and step]
    assert steps == [1, 2, 3]  # every step's progress came back from the task, in order
    assert (GOOD, "running", 0, "start") in seen  # and so did the task's "started"

    with pytest.raises(SystemExit) as done:
        _report(report, quiet=True)
    err = capsys.readouterr().err
    assert done.value.code == 1 and "Traceback" not in err
    assert err.splitlines() == [plain_line]  # the same one line as without Ray
    assert plain_line.startswith(f"failed: {BAD} (line 2): weight 'abc' in prompt 'apple:abc' is not a number")


def test_a_stop_reaches_the_task_which_checkpoints_and_resumes(
    tmp_path: Path, tiny_clip_spec: str, monkeypatch, cluster: None
) -> None:
    only_on_ray(monkeypatch)
    prompts, out = write_prompts(tmp_path, "a red apple\n"), tmp_path / "batch"
    settings = tiny_batch_settings(tiny_clip_spec).replace(iterations=300)  # ~3 s: the stop comes in ~0.1 s

    def stop_at_the_first_step(status: JobStatus) -> None:
        if status.step == 1:
            raise KeyboardInterrupt

    report = run_batch(prompts, settings, out, threads=1, ray="local", on_update=stop_at_the_first_step)
    [job] = report.jobs
    assert report.stopped and job.status.state is JobState.STOPPED and 0 < job.status.step < 300
    assert (out / "jobs" / GOOD / "state.pt").is_file()  # the checkpoint the rerun resumes from

    seen: list[tuple[str, str, int, str | None]] = []
    report = run_batch(prompts, settings, out, threads=1, ray="local", on_update=watcher(seen))
    assert [(job.status.state, job.status.action) for job in report.jobs] == [(JobState.DONE, "resume")]
    assert png.read_metadata(out / "jobs" / GOOD / "final.png", "generate")["step"] == 300 == seen[-1][2]


@pytest.mark.parametrize(
    ("address", "says"),
    [
        ("nowhere", "is not auto, local or a cluster address"),
        ("127.0.0.1:1", "cannot reach the Ray cluster at '127.0.0.1:1'"),
        ("auto", 'needs Ray: pip install "dreamcanvas[cluster]"'),
    ],
    ids=["not-an-address", "out-of-reach", "no-ray"],
)
def test_a_wrong_address_or_no_ray_is_one_line_and_writes_nothing(
    tmp_path: Path, tiny_clip_spec: str, capsys, monkeypatch, address: str, says: str
) -> None:
    if says.startswith("needs"):
        monkeypatch.setitem(sys.modules, "ray", None)  # import ray: ImportError
    prompts = write_prompts(tmp_path, PROMPTS)
    before = tree(tmp_path)
    code, _, err = run_cli(batch_args(tiny_clip_spec, prompts, tmp_path / "batch", "--ray", address), capsys)
    assert says in one_error_line(code, err)
    assert tree(tmp_path) == before


def test_a_task_whose_worker_died_fails_its_job_with_one_line() -> None:
    class DeadWorker:  # what ray.get raises for a task whose worker process was killed
        exceptions = ray.exceptions

        def get(self, reference: object) -> None:
            raise ray.exceptions.WorkerCrashedError()

    outcome = ray_backend.outcome_of(DeadWorker(), object())
    assert outcome.state is JobState.FAILED
    assert outcome.error == "the Ray worker running it died (WorkerCrashedError)"


def test_the_studio_on_ray_runs_its_jobs_as_ray_tasks(tmp_path: Path, tiny_clip_spec: str, monkeypatch,
                                                      cluster: None) -> None:  # fmt: skip
    """``studio --ray``: the page's queue is the same runner, its jobs Ray tasks, the picture the same bytes."""
    import time

    from dreamcanvas import engine
    from dreamcanvas.studio.forms import page_value
    from dreamcanvas.studio.service import Studio, StudioConfig

    direct = engine.generate(tiny_batch_settings(tiny_clip_spec).replace(prompts=["a red apple"], seed=5),
                             tmp_path / "direct")  # fmt: skip
    only_on_ray(monkeypatch)
    studio = Studio(StudioConfig(root=tmp_path / "studio", threads=1, allowed_models=frozenset([tiny_clip_spec]),
                                 methods=("generate",), ray="local"))  # fmt: skip
    fields = studio.fields["generate"]
    values = {field.name: page_value(field, field.default) for field in fields}
    values |= {"prompts": "a red apple", "clip_models": tiny_clip_spec, "width": 16, "height": 16, "cutn": 2,
               "iterations": 3, "seed": 5}  # fmt: skip
    studio.start()
    try:
        job_id = studio.submit("generate", [values[field.name] for field in fields])
        deadline = time.monotonic() + 120
        while not (snapshot := studio.snapshot(job_id)).ended and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        studio.close(timeout=60)
    assert snapshot.state is JobState.DONE, snapshot.error
    assert snapshot.pictures[0].read_bytes() == direct.image_path.read_bytes()
