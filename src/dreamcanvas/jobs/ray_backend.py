"""The Ray side of ``JobRunner(ray=ADDRESS)``: each job is one Ray task on a Ray cluster.

ADDRESS is ``auto`` (the cluster this machine belongs to, as ``ray start`` left it), ``local`` (a private Ray
instance on this machine, started for one ``run()`` and shut down after it) or a cluster's address
(``ray://HOST:10001`` for Ray Client, ``HOST:6379`` for the head node's GCS). A process that already called
``ray.init`` keeps its own connection, whatever ADDRESS says.

A task writes into its job's folder by absolute path, so the runner's root must be a folder every node reaches
at that same path (a shared file system: NFS, a cloud file share); every node needs dreamcanvas and its models.
Each task asks Ray for as many CPUs as its job has torch threads, and Ray places it on a node that has them free.
Progress and stop requests go through one small actor, the hub: the tasks post their steps there and
ask it, at every step, whether to stop (a stop checkpoints, resumably, as it does in a worker process).
A task is never retried: one whose worker or node dies fails its job, with one line, like a dead worker process.
"""

from __future__ import annotations

import os
import re
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.jobs.execute import run_job
from dreamcanvas.jobs.job import Action, Job, JobState, Outcome, describe_error

NEEDS_RAY = '--ray needs Ray: pip install "dreamcanvas[cluster]"'
AUTO, LOCAL = "auto", "local"
ADDRESS = re.compile(r"(?:ray://)?(?P<host>\[[0-9a-fA-F:.]+\]|[\w.-]+):(?P<port>\d{1,5})")
"""``HOST:PORT`` or ``ray://HOST:PORT``; HOST a name, an IPv4 address or a bracketed IPv6 one."""
PROBE_SECONDS = 10.0
"""How long to try a cluster's port before saying it is out of reach (``ray.init`` itself retries for minutes)."""


def import_ray() -> Any:
    """Ray, or the one line that says how to get it (it is an extra: most users never need it)."""
    try:
        import ray
    except ImportError:
        raise DreamcanvasError(NEEDS_RAY) from None
    return ray


def check_address(address: str) -> str:
    """Refuse, before anything runs, an address Ray could not even try (and a missing Ray)."""
    if address not in (AUTO, LOCAL) and not ADDRESS.fullmatch(address):
        raise DreamcanvasError(
            f"--ray {address!r} is not auto, local or a cluster address (ray://HOST:10001 or HOST:6379)"
        )
    import_ray()
    return address


@dataclass
class RaySession:
    """A connection to a cluster for one run, and the hub its tasks report to."""

    ray: Any
    hub: Any
    task: Any
    """:func:`_run_task` as a Ray remote function, never retried."""
    owned: bool
    """True if this session called ``ray.init`` (and so shuts Ray down at the end)."""

    def close(self) -> None:
        self.ray.kill(self.hub)
        if self.owned:
            self.ray.shutdown()


def connect(address: str, cores: int) -> RaySession:
    """Join the cluster at ``address`` (``local``: start one of ``cores`` CPUs here); one line if it fails."""
    ray = import_ray()
    _probe(address)
    owned = not ray.is_initialized()
    if owned:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no calls home, from a machine or a cluster
        try:
            ray.init(**_init_arguments(address, cores))
        except Exception as error:  # ConnectionError, a timeout, a refused token: all one line
            raise DreamcanvasError(f"cannot reach the Ray cluster at {address!r}: {describe_error(error)}") from None
    return RaySession(ray, _hub_class(ray).remote(), ray.remote(max_retries=0)(_run_task), owned)


def _probe(address: str) -> None:
    """Knock on a cluster address's port first: a wrong host or port is one line in seconds, not a hang."""
    found = ADDRESS.fullmatch(address)
    if found is None:  # auto and local: Ray finds (or starts) them itself, and says so at once
        return
    host, port = found["host"].strip("[]"), int(found["port"])
    try:
        socket.create_connection((host, port), timeout=PROBE_SECONDS).close()
    except OSError as error:
        reason = error.strerror or describe_error(error)
        raise DreamcanvasError(f"cannot reach the Ray cluster at {address!r}: {reason}") from None


def _init_arguments(address: str, cores: int) -> dict[str, Any]:
    quiet = {"logging_level": "ERROR", "log_to_driver": False}  # jobs report through the hub, not the console
    if address != LOCAL:
        return {"address": address, **quiet}
    return {"address": LOCAL, "num_cpus": cores, "include_dashboard": False, **quiet}


def node_cpus(ray: Any) -> list[int]:
    """The CPUs of every live node of the cluster."""
    return [int(node["Resources"].get("CPU", 0)) for node in ray.nodes() if node.get("Alive")]


def default_threads(ray: Any, workers: int) -> int:
    """Threads per job without ``--threads``: the cluster's CPUs shared by the jobs in flight, no more than the
    smallest node holds (so that every task fits on any node)."""
    cpus = node_cpus(ray) or [1]
    return max(1, min(sum(cpus) // workers, min(cpus)))


def check_threads(ray: Any, threads: int) -> None:
    """A task that asks for more CPUs than any node has would wait forever: refuse it at once."""
    largest = max(node_cpus(ray), default=0)
    if threads > largest:
        raise DreamcanvasError(f"--threads {threads} is more than any node of the Ray cluster has ({largest} CPUs)")


def submit(session: RaySession, job: Job, folder: Path, threads: int, stop: StopFlag) -> Any:
    """Start ``job`` as a Ray task holding ``threads`` CPUs, stopped by ``stop``; returns the reference to its
    :class:`Outcome`."""
    task = session.task.options(num_cpus=threads)
    return task.remote(job, str(folder.resolve()), threads, session.hub, stop.key)


def outcome_of(ray: Any, reference: Any) -> Outcome:
    """The task's outcome; a task that died (its worker, its node) or could not start fails its job, one line."""
    try:
        return ray.get(reference)
    except ray.exceptions.RayTaskError as error:  # run_job lets nothing through, but a task may fail to unpickle
        return Outcome(JobState.FAILED, None, 0, describe_error(error.cause or error))
    except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError, ray.exceptions.OutOfMemoryError) as error:
        return Outcome(JobState.FAILED, None, 0, f"the Ray worker running it died ({type(error).__name__})")
    except ray.exceptions.RayError as error:
        return Outcome(JobState.FAILED, None, 0, describe_error(error))


class StopFlag:
    """What the runner sets to stop one task: the same ``set()`` as a worker process's Event. Its key is new for
    every task, so that a job stopped and queued again runs afresh."""

    def __init__(self, session: RaySession) -> None:
        self.hub, self.key = session.hub, uuid.uuid4().hex

    def set(self) -> None:
        self.hub.stop.remote(self.key)


def finished(session: RaySession, references: list[Any], timeout: float) -> list[Any]:
    """The references among ``references`` whose task has ended, waiting up to ``timeout`` for one."""
    done, _ = session.ray.wait(references, num_returns=1, timeout=timeout)
    return done


def take_events(session: RaySession) -> list[tuple[str, str, Any]]:
    """The ``(job id, kind, payload)`` the tasks posted since the last look."""
    return session.ray.get(session.hub.take.remote())


# --- the cluster side -----------------------------------------------------------------------------


def _hub_class(ray: Any) -> Any:
    """The hub's actor class. Defined in here, so that Ray ships it by value: the actor's process then imports
    nothing of dreamcanvas (this module pulls in torch, seconds and hundreds of MB for a list and a set)."""

    class Hub:
        """The tasks' progress, waiting for the runner, and the stop requests, waiting for the tasks."""

        def __init__(self) -> None:
            self.events: list[tuple[str, str, Any]] = []
            self.stops: set[str] = set()

        def post(self, job_id: str, kind: str, payload: Any) -> None:
            self.events.append((job_id, kind, payload))

        def take(self) -> list[tuple[str, str, Any]]:
            events, self.events = self.events, []
            return events

        def stop(self, key: str) -> None:
            self.stops.add(key)

        def should_stop(self, key: str) -> bool:
            return key in self.stops

    return ray.remote(num_cpus=0)(Hub)  # takes no CPU: the jobs have them all


def _run_task(job: Job, folder: str, threads: int, hub: Any, stop_key: str) -> Outcome:
    """One job on a worker node: :func:`run_job`, its progress posted to the hub, its stop asked of it."""
    import ray
    import torch

    torch.set_num_threads(threads)

    def progress(step: int, total: int | None, loss: float | None) -> None:
        hub.post.remote(job.id, "progress", (step, total, loss))

    def started(action: Action) -> None:
        hub.post.remote(job.id, "started", str(action))

    def should_stop() -> bool:
        return ray.get(hub.should_stop.remote(stop_key))

    return run_job(job, Path(folder), progress, should_stop, started)
