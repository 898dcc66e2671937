"""Model tasks the viewer runs in the background: the optimise panel (maxact.ascent) and the context
panel (pipeline/context.py). They take seconds to minutes, so a POST starts a job and answers at
once with its id; the page polls ``GET /api/job/<id>`` and may cancel it
(``POST /api/job/<id>/cancel``).

One worker thread runs the jobs one at a time, holding the live model's lock while it runs (the
model is shared with live text). Each job is bounded: a wall-clock limit, after which it stops and
keeps what it found (``stopped``), and caps on its size checked before it starts. At most
``max_queued`` jobs wait; finished jobs are kept for ``keep`` lookups, oldest dropped first.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from maxact.config import JOBS, JobLimits
from maxact.errors import MaxactError


class JobRefused(MaxactError):
    """Too many jobs are waiting (HTTP 429)."""


@dataclass
class Job:
    id: str
    kind: str  # "ascend" | "context"
    describe: dict  # what was asked
    run: Callable  # run(lm, should_stop, progress) -> dict
    state: str = "queued"  # queued | running | done | cancelled | failed
    result: dict | None = None
    error: str | None = None
    progress: dict = field(default_factory=dict)
    cancel_requested: bool = False
    started: float | None = None
    finished: float | None = None

    def to_json(self) -> dict:
        return {"id": self.id, "kind": self.kind, "request": self.describe, "state": self.state,
                "progress": self.progress, "result": self.result, "error": self.error,
                "seconds": round((self.finished or time.monotonic()) - self.started, 2) if self.started else 0.0}


class JobQueue:
    """Runs jobs one at a time on a daemon thread with the model from ``with_model``."""

    def __init__(self, with_model: Callable[[Callable], object], limits: JobLimits = JOBS):
        self._with_model = with_model  # with_model(fn) runs fn(lm) holding the model's lock
        self.limits = limits
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._ids = itertools.count(1)
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def submit(self, kind: str, describe: dict, run: Callable) -> Job:
        with self._cond:
            active = sum(j.state in ("queued", "running") for j in self._jobs.values())
            if active >= self.limits.max_queued:
                raise JobRefused(f"{active} model jobs are already waiting or running (at most "
                                 f"{self.limits.max_queued}); wait for one to finish or cancel one")
            job = Job(f"{kind}-{next(self._ids)}", kind, describe, run)
            self._jobs[job.id] = job
            self._forget_old()
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="maxact-jobs", daemon=True)
                self._thread.start()
            self._cond.notify()
            return job

    def get(self, job_id: str) -> Job | None:
        with self._cond:
            return self._jobs.get(job_id)

    def cancel(self, job_id: str) -> Job | None:
        with self._cond:
            job = self._jobs.get(job_id)
            if job is not None:
                job.cancel_requested = True
                if job.state == "queued":
                    job.state, job.finished = "cancelled", time.monotonic()
                    job.started = job.started or job.finished
            return job

    def _forget_old(self) -> None:
        done = [k for k, j in self._jobs.items() if j.state not in ("queued", "running")]
        for k in done[: max(0, len(done) - self.limits.keep)]:
            del self._jobs[k]

    def _next(self) -> Job:
        with self._cond:
            while True:
                for job in self._jobs.values():
                    if job.state == "queued":
                        job.state, job.started = "running", time.monotonic()
                        return job
                self._cond.wait()

    def _work(self) -> None:
        while True:
            job = self._next()
            deadline = job.started + self.limits.seconds

            def should_stop(job=job, deadline=deadline) -> bool:
                return job.cancel_requested or time.monotonic() > deadline

            try:
                result = self._with_model(lambda lm, job=job, should_stop=should_stop:
                                          job.run(lm, should_stop, job.progress))
                state = "cancelled" if job.cancel_requested else "done"
                with self._cond:
                    job.result, job.state = result, state
            except MaxactError as e:
                with self._cond:
                    job.error, job.state = str(e), "failed"
            except Exception as e:  # noqa: BLE001 - a job's bug must not kill the worker; it is reported
                with self._cond:
                    job.error, job.state = f"internal error: {type(e).__name__}: {e}", "failed"
            finally:
                job.finished = time.monotonic()
