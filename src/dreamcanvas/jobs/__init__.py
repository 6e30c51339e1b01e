"""Jobs: many runs, one at a time or several at once, each in its own run folder, addressed by id.

* :mod:`~dreamcanvas.jobs.job`: a job (method name + settings + id) and its status, as plain data;
* :mod:`~dreamcanvas.jobs.methods`: the registry of methods a job can run (``generate``; ``sd``, ``style``,
  ``upscale`` register the same way);
* :mod:`~dreamcanvas.jobs.resumable`: skip a finished folder, resume a stopped one, start a new one;
* :mod:`~dreamcanvas.jobs.execute`, :mod:`~dreamcanvas.jobs.worker`: one job, in this process or a worker;
* :mod:`~dreamcanvas.jobs.runner`: the :class:`JobRunner` queue that ``dreamcanvas batch`` and the studio share;
* :mod:`~dreamcanvas.jobs.batch`, :mod:`~dreamcanvas.jobs.gallery`: a prompts file as a batch folder, its
  contact sheet and ``index.html``.

Nothing here knows about a user interface: the CLI and the studio only submit jobs and watch their statuses.
"""

from dreamcanvas.jobs.job import Action, Job, JobState, JobStatus
from dreamcanvas.jobs.methods import Method, method_named, register
from dreamcanvas.jobs.runner import JobRunner

__all__ = ["Action", "Job", "JobRunner", "JobState", "JobStatus", "Method", "method_named", "register"]
