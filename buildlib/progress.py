"""Live progress of a run: one updating status line on a terminal, plain lines elsewhere."""

from __future__ import annotations

import threading
import time
from typing import IO, TYPE_CHECKING

from buildlib.estimate import Estimate, clock

if TYPE_CHECKING:
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text


class Progress:
    """Told when each image task starts and ends; shows done/total, what runs and for how
    long, and (given an estimate from the last run) about how long the run has left.

    On a terminal a rich status line stays at the bottom and updates itself; in CI or a
    pipe every start and end is a plain line, so logs read in order.
    """

    def __init__(self, out: IO[str], total: int, estimate: Estimate | None = None) -> None:
        self.total = total
        self.done = 0
        self.started = time.monotonic()
        self.running: dict[str, tuple[str, float]] = {}  # task -> (label, when it began)
        self.estimate = estimate
        self.lock = threading.Lock()
        self.out = out
        self.console: Console | None = None  # rich, imported only for a terminal
        self.live: Live | None = None
        if out.isatty():
            from rich.console import Console
            from rich.live import Live

            self.console = Console(file=out, highlight=False, soft_wrap=True)
            self.live = Live(self._status(), console=self.console, refresh_per_second=4,
                             transient=True, get_renderable=self._status)
            self.live.start()

    def line(self, text: str) -> None:
        with self.lock:
            if self.console is None:
                self.out.write(f"{text}\n")
                self.out.flush()
            else:
                from rich.text import Text

                self.console.print(Text(text), soft_wrap=True)

    def begin(self, task: str, label: str, title: str) -> None:
        with self.lock:
            self.running[task] = (label, time.monotonic())
            if self.estimate is not None:
                self.estimate.started(task)
        self.line(f".  {title}")

    def end(self, task: str, outcome: str) -> None:
        """`outcome` says what happened, e.g. "built nova-api"; the time taken follows,
        then the time left."""
        with self.lock:
            _, began = self.running.pop(task, (None, None))
            self.done += 1
            done = self.done
            if self.estimate is not None:
                self.estimate.finished(task)
            left = self._left(time.monotonic())
        took = f" in {time.monotonic() - began:.1f} s" if began is not None else ""
        self.line(f"[{done}/{self.total}] {outcome}{took}" + (f"; {left}" if left else ""))

    def skip(self, task: str) -> None:
        with self.lock:
            self.done += 1
            if self.estimate is not None:
                self.estimate.finished(task)

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None

    def _left(self, now: float) -> str:
        """`about 1:05 left` (the lock held), or "" without an estimate or work left."""
        if self.estimate is None or not self.estimate.pending:
            return ""
        ran = {task: now - began for task, (_, began) in self.running.items()}
        return f"about {clock(self.estimate.left(ran))} left"

    def _status(self) -> Text:
        from rich.text import Text

        now = time.monotonic()
        with self.lock:
            running = ", ".join(f"{label} {now - began:.0f}s" for label, began in
                                sorted(self.running.values(), key=lambda item: item[1]))
            done = self.done
            left = self._left(now)
        return Text(f"[{done}/{self.total}] {clock(now - self.started)} elapsed"
                    + (f", {left}" if left else "")
                    + (f"; running: {running}" if running else ""), style="bold")
