"""One job runner for everything that runs several pictures: ``dreamcanvas batch`` now, the studio's queue later.

``JobRunner(root)`` keeps a queue of jobs, each addressed by its id and drawn in ``root/<id>``; nobody outside
hands it a path. ``run()`` works the queue one job at a time in this process, or ``workers=N`` at a time in
worker processes (:mod:`dreamcanvas.jobs.worker`) that split the cores, or (``ray=ADDRESS``) ``workers=N`` at a
time as Ray tasks on a cluster (:mod:`dreamcanvas.jobs.ray_backend`). Every change of a job (state, step,
loss) goes to ``on_update`` as a :class:`JobStatus`, in the thread that called ``run()``.

A job's exception fails that job only, as one line (:func:`~dreamcanvas.jobs.job.describe_error`); a worker
process that dies fails the jobs it held and a fresh pool carries on. ``stop(job_id)`` stops one job (a
checkpoint, resumable), ``stop()`` all of them; a job stopped without being asked to (Ctrl-C, or
KeyboardInterrupt raised by ``on_update``) stops the whole run, and the jobs not begun stay queued.

The studio's use: one runner for the server's life, ``run(wait=True)`` in a background thread, ``submit`` from
the request handlers (thread-safe), ``position(id)`` for a job's place in the queue, ``status(id)`` for its
progress bar, ``stop(id)`` for its Stop button, ``close()`` at shutdown.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor
from concurrent.futures import wait as wait_for
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.jobs.execute import run_job, settled_without_running
from dreamcanvas.jobs.job import Action, Job, JobState, JobStatus, Outcome, check_job_id, describe_error
from dreamcanvas.records import SettingsRecord

UpdateCallback = Callable[[JobStatus], None]
POLL_SECONDS = 0.1
"""How often the parent looks at its workers' progress while it waits for one to finish."""


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


class JobRunner:
    def __init__(self, root: str | Path, *, workers: int = 1, threads: int | None = None,
                 on_update: UpdateCallback | None = None, isolate: bool = False, ray: str = "") -> None:  # fmt: skip
        """``threads``: torch threads per job (default: the cores split between the workers; with one worker,
        this process's own setting). ``isolate``: run jobs in a worker process even with one worker, so that a job
        whose process dies (the kernel's out-of-memory killer, a crash in native code) fails alone and the caller
        (the studio's server) lives on. ``ray``: run each job as a Ray task instead, ``workers`` at once, on the
        cluster at this address (``auto``, ``local`` or ``HOST:PORT``; see :mod:`dreamcanvas.jobs.ray_backend`)."""
        if ray:
            from dreamcanvas.jobs import ray_backend

            ray_backend.check_address(ray)
        if workers < 1:
            raise DreamcanvasError(f"--workers must be at least 1, not {workers}")
        if threads is not None and threads < 1:
            raise DreamcanvasError(f"--threads must be at least 1, not {threads}")
        self.root = Path(root)
        self.workers = workers
        self.threads = threads
        self.on_update = on_update
        self.isolate = isolate
        self.ray = ray
        self._ray_session: Any = None
        """The Ray connection of the run under way (or made early by :meth:`connect`)."""
        self._jobs: dict[str, Job] = {}
        self._statuses: dict[str, JobStatus] = {}
        self._queue: deque[str] = deque()
        self._stop_requests: set[str] = set()
        self._stop_all = False
        self._closed = False
        self._lock = threading.Condition()
        self._slot_flags: dict[str, Any] = {}
        """Job id -> the stop flag of the worker slot (multi-process runs) or of the Ray task running it."""

    # --- what the callers see -----------------------------------------------------------------------

    def submit(self, method: str, settings: SettingsRecord | dict[str, Any], job_id: str | None = None, *,
               force: bool = False) -> str:  # fmt: skip
        """Queue a job; returns its id (``job_id``, or a new one whose folder does not exist yet)."""
        data = settings if isinstance(settings, dict) else settings.to_dict()
        with self._lock:
            job_id = check_job_id(job_id) if job_id is not None else self._new_id()
            if job_id in self._queue or job_id in self._running():
                raise DreamcanvasError(f"job {job_id} is already queued or running")
            self._jobs[job_id] = Job(job_id, method, data, force)
            self._statuses[job_id] = JobStatus(job_id, method)
            self._queue.append(job_id)
            self._stop_requests.discard(job_id)
            self._lock.notify_all()
        self._notify(job_id)
        return job_id

    def folder(self, job_id: str) -> Path:
        """The run folder of a job: always ``root/<id>``, whatever the id came from."""
        return self.root / check_job_id(job_id)

    def status(self, job_id: str) -> JobStatus:
        with self._lock:
            if job_id not in self._statuses:
                raise DreamcanvasError(f"no job {job_id!r}")
            return dataclasses.replace(self._statuses[job_id])

    def statuses(self) -> list[JobStatus]:
        """Every job submitted, in the order of submission."""
        with self._lock:
            return [dataclasses.replace(status) for status in self._statuses.values()]

    def position(self, job_id: str) -> int | None:
        """A queued job's place in the queue (0: next to start); None once it has started or ended."""
        with self._lock:
            return self._queue.index(job_id) if job_id in self._queue else None

    @property
    def stopped(self) -> bool:
        """True once the whole run was stopped (``stop()``, Ctrl-C, a KeyboardInterrupt from ``on_update``)."""
        return self._stop_all

    def stop(self, job_id: str | None = None) -> None:
        """Stop one job (queued: it leaves the queue; running: it checkpoints and ends), or every job."""
        unqueued = []
        with self._lock:
            if job_id is None:
                self._stop_all = True  # the queued jobs stay queued, for the next run()
            for one in self._running() if job_id is None else [job_id]:
                if one in self._queue:
                    self._queue.remove(one)
                    self._statuses[one].state = JobState.STOPPED
                    unqueued.append(one)
                    continue
                self._stop_requests.add(one)
                if one in self._slot_flags:
                    self._slot_flags[one].set()
            self._lock.notify_all()
        for one in unqueued:
            self._notify(one)

    def connect(self) -> None:
        """Reach the Ray cluster now, so that a wrong ``ray`` address is found before anything is written (one
        line); ``run()`` connects by itself otherwise. A no-op without ``ray``."""
        if self.ray and self._ray_session is None:
            from dreamcanvas.jobs import ray_backend

            self._ray_session = ray_backend.connect(self.ray, usable_cores())

    def close(self) -> None:
        """Let ``run(wait=True)`` return once the jobs under way are done."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()

    def run(self, wait: bool = False) -> list[JobStatus]:
        """Work the queue until it is empty (or, with ``wait``, until :meth:`close`), or until stopped; returns
        every job's status. A rerun after a stop picks up the jobs still queued."""
        self._stop_all = False
        if self.ray:
            self._run_on_ray(wait)
        elif self.workers == 1 and not self.isolate:
            self._run_here(wait)
        else:
            self._run_in_workers(wait)
        return self.statuses()

    # --- one process -------------------------------------------------------------------------------

    def _run_here(self, wait: bool) -> None:
        while (job := self._next(wait)) is not None:
            try:
                self._set_state(job.id, JobState.RUNNING)
                outcome = self._run_one_here(job)
            except KeyboardInterrupt:  # a stop outside the run itself (on_update, or Ctrl-C between steps of ours)
                outcome = Outcome(JobState.QUEUED, None, 0)
                self._stop_all = True
            self._finish(job.id, outcome)

    def _run_one_here(self, job: Job) -> Outcome:
        import torch

        previous = torch.get_num_threads()
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        try:
            return run_job(
                job,
                self.folder(job.id),
                lambda step, total, loss: self._progress(job.id, step, total, loss),
                lambda: self._stop_all or job.id in self._stop_requests,
                lambda action: self._started(job.id, action),
            )
        finally:
            torch.set_num_threads(previous)

    # --- worker processes --------------------------------------------------------------------------

    def _run_in_workers(self, wait: bool) -> None:
        from dreamcanvas.jobs import worker

        context = multiprocessing.get_context("spawn")
        threads = self.threads or max(1, usable_cores() // self.workers)
        while True:  # one pass per pool: a pool whose worker died is replaced for the jobs left
            events = context.Queue()
            flags = [context.Event() for _ in range(self.workers)]
            pool = ProcessPoolExecutor(self.workers, mp_context=context, initializer=worker.initialise,
                                       initargs=(events, flags, threads))  # fmt: skip
            try:
                broken = self._work_pool(pool, events, flags, wait)
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
                events.close()
            if not broken:
                return

    def _work_pool(self, pool: ProcessPoolExecutor, events: Any, flags: list[Any], wait: bool) -> bool:
        """Keep every slot busy until the queue is worked; True if the pool broke (a worker process died)."""
        from dreamcanvas.jobs import worker

        in_flight: dict[Future, tuple[str, int]] = {}
        free_slots = list(range(self.workers))
        broken = False
        while True:
            try:
                while free_slots and not broken and (job := self._next(wait=False)) is not None:
                    settled = settled_without_running(job, self.folder(job.id))
                    if settled is not None:
                        self._set_state(job.id, JobState.RUNNING)
                        self._finish(job.id, settled)
                        continue
                    slot = free_slots.pop()
                    flags[slot].clear()
                    with self._lock:
                        self._slot_flags[job.id] = flags[slot]
                        if job.id in self._stop_requests:
                            flags[slot].set()
                    self._set_state(job.id, JobState.RUNNING)
                    future = pool.submit(worker.execute, job, str(self.folder(job.id)), slot)
                    in_flight[future] = (job.id, slot)
                if not in_flight:
                    if broken or not self._keep_waiting(wait):
                        return broken
                    continue
                done, _ = wait_for(in_flight, timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
                self._drain(events)
                for future in done:
                    job_id, slot = in_flight.pop(future)
                    free_slots.append(slot)
                    with self._lock:
                        self._slot_flags.pop(job_id, None)
                    outcome, broken_now = self._outcome_of(future)
                    broken = broken or broken_now
                    self._finish(job_id, outcome)
            except KeyboardInterrupt:  # Ctrl-C (workers ignore it) or on_update: ask every run to checkpoint
                self.stop()

    def _outcome_of(self, future: Future) -> tuple[Outcome, bool]:
        try:
            return future.result(), False
        except BrokenProcessPool as error:
            return Outcome(JobState.FAILED, None, 0, f"the worker process running it died ({error})"), True
        except Exception as error:  # e.g. an outcome that could not be sent back
            return Outcome(JobState.FAILED, None, 0, describe_error(error)), False

    def _drain(self, events: Any) -> None:
        """Apply the progress the workers sent since the last look."""
        import queue

        received = []
        while True:
            try:
                received.append(events.get_nowait())
            except queue.Empty:
                break
        self._apply(received)

    def _apply(self, events: list[tuple[str, str, Any]]) -> None:
        """Apply ``(job id, kind, payload)`` events: a job's start (its action) or its progress."""
        for job_id, kind, payload in events:
            if kind == "started":
                self._started(job_id, Action(payload))
            else:
                self._progress(job_id, *payload)

    def _keep_waiting(self, wait: bool) -> bool:
        """With ``wait``: block until a job is submitted, or the runner is closed or stopped."""
        with self._lock:
            if not wait or self._closed or self._stop_all:
                return False
            self._lock.wait(POLL_SECONDS * 10)
            return True

    # --- Ray tasks ---------------------------------------------------------------------------------

    def _run_on_ray(self, wait: bool) -> None:
        """Each job a Ray task, ``workers`` in flight; the session (and a ``local`` Ray) ends with the run."""
        from dreamcanvas.jobs import ray_backend

        self.connect()
        session, self._ray_session = self._ray_session, None
        try:
            threads = self.threads or ray_backend.default_threads(session.ray, self.workers)
            ray_backend.check_threads(session.ray, threads)
            self._work_ray(session, threads, wait)
        finally:
            session.close()

    def _work_ray(self, session: Any, threads: int, wait: bool) -> None:
        """Keep ``workers`` tasks in flight until the queue is worked, as :meth:`_work_pool` does for processes."""
        from dreamcanvas.jobs import ray_backend

        in_flight: dict[Any, str] = {}
        while True:
            try:
                while len(in_flight) < self.workers and (job := self._next(wait=False)) is not None:
                    if (settled := settled_without_running(job, self.folder(job.id))) is not None:
                        self._set_state(job.id, JobState.RUNNING)
                        self._finish(job.id, settled)
                        continue
                    stop = ray_backend.StopFlag(session)
                    with self._lock:
                        self._slot_flags[job.id] = stop
                        if job.id in self._stop_requests:
                            stop.set()
                    self._set_state(job.id, JobState.RUNNING)
                    in_flight[ray_backend.submit(session, job, self.folder(job.id), threads, stop)] = job.id
                if not in_flight:
                    if not self._keep_waiting(wait):
                        return
                    continue
                done = ray_backend.finished(session, list(in_flight), POLL_SECONDS)
                self._apply(ray_backend.take_events(session))
                for reference in done:
                    job_id = in_flight.pop(reference)
                    with self._lock:
                        self._slot_flags.pop(job_id, None)
                    self._finish(job_id, ray_backend.outcome_of(session.ray, reference))
            except KeyboardInterrupt:  # Ctrl-C or on_update: ask every task to checkpoint
                self.stop()

    # --- book-keeping ------------------------------------------------------------------------------

    def _new_id(self) -> str:
        number = len(self._statuses) + 1
        while f"job-{number:04d}" in self._statuses or (self.root / f"job-{number:04d}").exists():
            number += 1
        return f"job-{number:04d}"

    def _running(self) -> list[str]:
        return [job_id for job_id, status in self._statuses.items() if status.state is JobState.RUNNING]

    def _next(self, wait: bool) -> Job | None:
        with self._lock:
            while True:
                if self._stop_all:
                    return None
                if self._queue:
                    return self._jobs[self._queue.popleft()]
                if not wait or self._closed:
                    return None
                self._lock.wait()

    def _set_state(self, job_id: str, state: JobState) -> None:
        with self._lock:
            self._statuses[job_id].state = state
        self._notify(job_id)

    def _started(self, job_id: str, action: Action) -> None:
        with self._lock:
            self._statuses[job_id].action = action
        self._notify(job_id)

    def _progress(self, job_id: str, step: int, total: int | None, loss: float | None) -> None:
        with self._lock:
            status = self._statuses[job_id]
            if status.state is not JobState.RUNNING:  # a late message from a worker: the job has ended
                return
            status.step, status.total, status.loss = step, total, loss
        self._notify(job_id, during_a_step=True)

    def _finish(self, job_id: str, outcome: Outcome) -> None:
        with self._lock:
            status = self._statuses[job_id]
            status.state, status.error = outcome.state, outcome.error
            status.action = outcome.action or status.action
            status.step = max(status.step, outcome.step)
            if outcome.state is JobState.QUEUED:  # never began: first in line for the next run()
                self._queue.appendleft(job_id)
            # stopped without being asked to (Ctrl-C, or on_update said stop): the others stop too
            unasked = outcome.state is JobState.STOPPED and job_id not in self._stop_requests
            self._stop_requests.discard(job_id)
        if unasked:
            self.stop()
        self._notify(job_id)

    def _notify(self, job_id: str, *, during_a_step: bool = False) -> None:
        """Tell ``on_update``. A KeyboardInterrupt it raises stops the whole run: during a step it goes on into
        the run, which checkpoints and ends; anywhere else the runner only takes note."""
        if self.on_update is None:
            return
        try:
            self.on_update(self.status(job_id))
        except KeyboardInterrupt:
            self.stop()
            if during_a_step:
                raise
