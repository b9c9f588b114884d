"""Live progress of a run: one updating status line on a terminal, plain lines elsewhere."""

from __future__ import annotations

import threading
import time
from typing import IO

from rich.console import Console
from rich.live import Live
from rich.text import Text


class Progress:
    """Told when each image task starts and ends; shows done/total, what runs and for how long.

    On a terminal a rich status line stays at the bottom and updates itself; in CI or a
    pipe every start and end is a plain line, so logs read in order.
    """

    def __init__(self, out: IO[str], total: int) -> None:
        self.total = total
        self.done = 0
        self.started = time.monotonic()
        self.running: dict[str, float] = {}
        self.lock = threading.Lock()
        self.console = Console(file=out, highlight=False, soft_wrap=True)
        self.live: Live | None = None
        if self.console.is_terminal:
            self.live = Live(self._status(), console=self.console, refresh_per_second=4,
                             transient=True, get_renderable=self._status)
            self.live.start()

    def line(self, text: str) -> None:
        with self.lock:
            self.console.print(Text(text), soft_wrap=True)

    def begin(self, label: str, title: str) -> None:
        with self.lock:
            self.running[label] = time.monotonic()
        self.line(f".  {title}")

    def end(self, label: str, outcome: str) -> None:
        """`outcome` says what happened, e.g. "built nova-api"; the time taken follows."""
        with self.lock:
            began = self.running.pop(label, None)
            self.done += 1
            done = self.done
        took = f" in {time.monotonic() - began:.1f} s" if began is not None else ""
        self.line(f"[{done}/{self.total}] {outcome}{took}")

    def skip(self) -> None:
        with self.lock:
            self.done += 1

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None

    def _status(self) -> Text:
        now = time.monotonic()
        with self.lock:
            running = ", ".join(f"{label} {now - began:.0f}s"
                                for label, began in sorted(self.running.items(),
                                                           key=lambda item: item[1]))
            done = self.done
        elapsed = int(now - self.started)
        return Text(f"[{done}/{self.total}] {elapsed // 60}:{elapsed % 60:02d} elapsed"
                    + (f"; running: {running}" if running else ""), style="bold")
