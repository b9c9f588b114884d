"""buildlib.pushpool: at most `jobs` pushes at once, each told when it starts and ends."""

from __future__ import annotations

import threading
from typing import Any

from buildlib.pushpool import PushPool


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.running = self.most = 0

    def started(self, job: Any) -> None:
        self.events.append(("started", job))
        self.running += 1
        self.most = max(self.most, self.running)

    def finished(self, job: Any, result: Any, error: BaseException | None) -> None:
        self.events.append(("finished", job))
        if ("started", job) in self.events:
            self.running -= 1


def test_at_most_jobs_pushes_at_once_and_the_end_waits_for_all() -> None:
    pool, recorder = PushPool(2), Recorder()
    pool.listener = recorder
    gate = threading.Event()
    for job in range(5):
        pool.submit(job, lambda: gate.wait(5), lambda: None)
    gate.set()
    pool.wait()
    assert recorder.most == 2
    assert sorted(job for event, job in recorder.events if event == "finished") == [0, 1, 2, 3, 4]


def test_a_failed_push_is_counted_and_one_not_started_when_stopped() -> None:
    pool, recorder = PushPool(1), Recorder()
    pool.listener = recorder

    def fails() -> None:
        raise RuntimeError("refused")

    pool.submit("a", fails, lambda: None)
    pool.submit("b", lambda: "ok", lambda: RuntimeError("interrupted"))
    pool.wait()
    assert pool.failed == ["a", "b"]
    assert ("started", "b") not in recorder.events and ("finished", "b") in recorder.events
