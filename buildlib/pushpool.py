"""Pushes in their own bounded pool, beside the build jobs (as kolla-build keeps one).

doit still schedules: a push task becomes ready when its image is built, and its action
only hands the push to this pool and returns, so a push never holds one of doit's job
slots and no build waits behind a push. The pool tells whoever reports (`Listener`) when
each push starts and how it ended, from its own threads, one event at a time; the run's
end waits for it (`wait`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # imported by the first push: a run without pushes skips thread pools
    from concurrent.futures import Future, ThreadPoolExecutor


class Listener(Protocol):
    def started(self, job: Any) -> None: ...

    def finished(self, job: Any, result: Any, error: BaseException | None) -> None: ...


class PushPool:
    """At most `jobs` pushes at once; its threads start with the first push handed over."""

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs
        self.listener: Listener | None = None
        self.failed: list[Any] = []  # the jobs whose push failed
        self._executor: ThreadPoolExecutor | None = None
        self._futures: list[Future] = []
        self._lock = threading.Lock()  # one event at a time, whichever thread it comes from

    def submit(self, job: Any, push: Callable[[], Any],
               stopped: Callable[[], BaseException | None]) -> None:
        """Push later, in the pool. `stopped()` says why a push not yet started must not
        start (the run was interrupted), or None."""
        if self._executor is None:
            from concurrent.futures import ThreadPoolExecutor

            self._executor = ThreadPoolExecutor(self.jobs, thread_name_prefix="push")
        self._futures.append(self._executor.submit(self._run, job, push, stopped))

    def _run(self, job: Any, push: Callable[[], Any],
             stopped: Callable[[], BaseException | None]) -> None:
        result, error = None, stopped()
        if error is None:
            self._tell("started", job)
            try:
                result = push()
            except Exception as err:  # reported as the push's failure, as doit would
                error = err
        if error is not None:
            self.failed.append(job)
        self._tell("finished", job, result, error)

    def _tell(self, event: str, *args: Any) -> None:
        with self._lock:
            if self.listener is not None:
                getattr(self.listener, event)(*args)

    def wait(self) -> None:
        """Until every push handed over has ended (and been told)."""
        if self._executor is not None:
            from concurrent.futures import wait

            wait(self._futures)
            self._executor.shutdown()

    @property
    def lock(self) -> threading.Lock:
        """Held while the listener is told: others that report hold it too."""
        return self._lock
