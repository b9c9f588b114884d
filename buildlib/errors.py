"""The one error type for a user's bad input: it names the file, the image and the fix."""

from __future__ import annotations

from pathlib import Path


class InputError(Exception):
    """Bad input found before any build starts; shown as one message, exit status 1."""

    def __init__(self, path: Path | str, problem: str, *, image: str | None = None,
                 fix: str = "") -> None:
        self.path = Path(path)
        self.image = image
        self.problem = problem
        self.fix = fix
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.path}: image '{self.image}'" if self.image else f"{self.path}"
        text = f"{where}: {self.problem}"
        return f"{text}\n  fix: {self.fix}" if self.fix else text


class CommandFailed(Exception):
    """A command (status, resolve, merge, export, prune, ...) that could not do its work:
    its message is shown and its task fails (`tasks.py` turns it into doit's failure)."""
