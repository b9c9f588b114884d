"""The run's reporter told of pooled pushes by the push pool (`pushpool`), when each push
really starts and ends, instead of by doit, which saw it handed over; one event at a time.
The reporter's end waits for the pushes, before the summary and report.json."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from doit.exceptions import TaskFailed

from buildlib import buildah
from buildlib.processes import StopControl
from buildlib.pushpool import PushPool


def hand_over(pool: PushPool, task: Any, push: Callable[[], Any], stop: StopControl) -> None:
    """A push task's action: the push goes to the pool and the task ends at once, so that
    its job slot goes to the next build. What `push` raises is its failure."""
    pool.submit(task, push, lambda: _stopped(stop))


def _stopped(stop: StopControl) -> BaseException | None:
    return buildah.Interrupted("interrupted") if stop.signal else None


def pooled_pushes(pool: PushPool, reporter: type) -> type:
    """`reporter`, told of the pool's pushes by the pool."""

    class PooledPushes(reporter):  # type: ignore[misc,valid-type]
        def __init__(self, outstream: Any, options: dict[str, Any]) -> None:
            super().__init__(outstream, options)
            pool.listener = self

        def execute_task(self, task: Any) -> None:
            if not _pooled(task):
                with pool.lock:
                    super().execute_task(task)

        def add_success(self, task: Any) -> None:
            if not _pooled(task):
                with pool.lock:
                    super().add_success(task)

        def add_failure(self, task: Any, fail: Any) -> None:
            with pool.lock:  # (a pooled push fails here only when it was never handed over)
                super().add_failure(task, fail)

        def skip_uptodate(self, task: Any) -> None:
            with pool.lock:
                super().skip_uptodate(task)

        def started(self, task: Any) -> None:
            super().execute_task(task)

        def finished(self, task: Any, result: Any, error: BaseException | None) -> None:
            if error is not None:
                super().add_failure(task, TaskFailed(str(error)))
                return
            task.values.update(result or {})
            super().add_success(task)

        def complete_run(self) -> None:
            pool.wait()
            super().complete_run()

    return PooledPushes


def _pooled(task: Any) -> bool:
    return bool((task.meta or {}).get("pooled"))
