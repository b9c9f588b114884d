"""The one place that uses doit's internals: a short function per use, each guarded by a
canary in tests/test_doit_seam.py that fails when a doit upgrade changes what it relies on.

Internals used here (doit 0.36 and 0.37), and why:

- `install_ready_queue`: `doit.cmd_run.TaskControl` (the module global its
  `Run` command instantiates), a `control.TaskControl` subclass whose `task_dispatcher()`
  replaces `TaskDispatcher.ready` (a FIFO deque used through `append`, `popleft` and
  truth only). doit has no hook to order ready tasks; `dispatch` needs critical-path-first.
- `keep_state_save_errors`: wraps `dependency.Dependency.close`, where doit writes its state
  at the end of a run; a full disk there raised a traceback before the summary.
- `SavedValuesCalculator`: `UptodateCalculator.setup(dep_manager, tasks_dict)`, the call
  doit makes on each such up-to-date check before it runs, to keep the dep manager; saved
  values are then read with the public `Dependency.get_values(task_name)`.
- `TASK_AND_VALUES`: `Dependency.get_status` asks `inspect.signature` of every task's
  up-to-date check, to pass it `task` and `values`; a check's class states it once as its
  `__signature__` (inspect's own protocol), rather than inspect working it out per image.
- `strip_loader_options`, `command_names`, `run_options`: `cmdparse.CmdParse`/`CmdOption`,
  `cmd_base.DodoTaskLoader.cmd_options`, `doit_cmd.DoitMain.DOIT_CMDS`,
  `cmd_run.Run.cmd_options`: the run reads doit's command line (command, tasks, `-n`)
  before doit does, as doit reads it, to know what the run will do while loading.
- `remember_initial_workdir`: sets `doit.loader.initial_workdir`, which doit sets only when
  it loads a dodo.py; the `imagebake` command loads no dodo.py. (`user_workdir` reads it
  through the public `doit.get_initial_workdir`.)
- `command_line_variables`: `doit_cmd._CMDLINE_VARS`, the dict `get_var` reads, for the
  variables named by a prefix (`set.nova.args.X=8`): `get_var` needs each exact name.
- `NamespaceLoader`: `cmd_base.NamespaceTaskLoader` with its `namespace` attribute set in
  `setup`, once doit has read the command line's variables (the public `TaskLoader2`
  API has no loader of a namespace made that late).

What this module installs lasts for the process (a process runs one doit command); tests
undo it with `undone_after`.

Public API stays where it is used: task dicts, `get_var`, `DoitMain(loader).run`,
`reporter.ConsoleReporter` as a reporter base, `exceptions.TaskFailed`, `BaseFail`,
`UnmetDependency`, `UptodateCalculator` as the documented base of up-to-date checks.
"""

from __future__ import annotations

import contextlib
import dbm
import inspect
import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import doit
from doit import cmd_run, control, doit_cmd, loader
from doit.cmd_base import DodoTaskLoader, NamespaceTaskLoader
from doit.cmdparse import CmdOption, CmdParse, CmdParseError
from doit.dependency import Dependency, UptodateCalculator
from doit.doit_cmd import DoitMain

# --- dispatch: the ready queue ----------------------------------------------------------


def install_ready_queue(make_queue: Callable[[], Any]) -> None:
    """From now on, doit's `run` command keeps its ready tasks in `make_queue()` (made once,
    when the run starts dispatching) in place of its FIFO deque. The queue needs
    `append(node)`, `popleft()` and truth."""

    class PriorityControl(control.TaskControl):
        def task_dispatcher(self) -> control.TaskDispatcher:
            dispatcher = super().task_dispatcher()
            dispatcher.ready = make_queue()
            return dispatcher

    cmd_run.TaskControl = PriorityControl


def ready_queue_installed() -> bool:
    """Whether doit's `run` command would use another ready queue than its own."""
    return cmd_run.TaskControl is not control.TaskControl


# --- the state saved at the end of a run ------------------------------------------------

STATE_SAVE_ERRORS = (sqlite3.Error, OSError, *dbm.error)


def keep_state_save_errors(errors: list[Exception]) -> None:
    """From now on, an error of doit's state backend while it writes the state at the end
    of a run (`Dependency.close`) is appended to `errors` instead of raised (the list of
    the last call)."""

    def close_keeping_errors(self: Dependency) -> None:
        try:
            _DOIT_CLOSE(self)
        except STATE_SAVE_ERRORS as err:
            errors.append(err)

    Dependency.close = close_keeping_errors  # type: ignore[method-assign]


_DOIT_CLOSE = Dependency.close


# --- saved values of other tasks --------------------------------------------------------


TASK_AND_VALUES = inspect.Signature([inspect.Parameter(
    name, inspect.Parameter.POSITIONAL_OR_KEYWORD) for name in ("task", "values")])


class SavedValuesCalculator(UptodateCalculator):
    """An up-to-date check that reads what other tasks saved (`saved_values`), through
    the dep manager doit hands it before it is called; it is called with `task` and
    `values`."""

    __signature__ = TASK_AND_VALUES

    def __init__(self) -> None:
        super().__init__()
        self.dep_manager: Dependency | None = None

    def setup(self, dep_manager: Dependency, tasks_dict: dict[str, Any]) -> None:
        super().setup(dep_manager, tasks_dict)
        self.dep_manager = dep_manager

    def saved_values(self, task_name: str) -> dict[str, Any]:
        """The values `task_name` saved when it last ran; {} when none (or before setup)."""
        if self.dep_manager is None:
            return {}
        return self.dep_manager.get_values(task_name)


# --- doit's command line ----------------------------------------------------------------


def strip_loader_options(argv: list[str]) -> list[str]:
    """argv without doit's loader options (`-f dodo.py`, `-d DIR`, `-k`), as doit reads
    them before the command; argv itself when they do not parse."""
    try:
        _, rest = CmdParse([CmdOption(o) for o in DodoTaskLoader.cmd_options]).parse_only(argv)
    except CmdParseError:
        return argv
    return list(rest)


def command_names() -> set[str]:
    """The names of doit's own commands (`run`, `list`, `clean`, ...)."""
    return {command.get_name() for command in DoitMain.DOIT_CMDS}


def run_options(words: list[str]) -> tuple[int | None, list[str]] | None:
    """`doit run`'s words -> (its `-n` jobs, None when not given; the tasks it names);
    None when they do not parse as `run`'s options."""
    try:
        options, tasks = CmdParse([CmdOption(o) for o in cmd_run.Run.cmd_options]).parse(words)
    except CmdParseError:
        return None
    return options.get("num_process") or None, list(tasks)


# --- where the user ran the command -----------------------------------------------------


def remember_initial_workdir(path: str | os.PathLike[str]) -> None:
    """Where the user ran the command, for `user_workdir`, as doit notes it when it loads
    a dodo.py (and then changes into dodo.py's folder)."""
    loader.initial_workdir = os.fspath(path)


def user_workdir() -> Path:
    """The folder the command was run in (doit may have changed into dodo.py's since)."""
    return Path(doit.get_initial_workdir() or os.getcwd())


def display_path(path: Path) -> str:
    """Relative to the user's directory when under it, else absolute (doit has changed
    into dodo.py's folder; its loader remembers where the user was)."""
    where = user_workdir().resolve()
    try:
        return str(path.resolve().relative_to(where))
    except ValueError:
        return str(path)


# --- the command line's variables -------------------------------------------------------


def command_line_variables() -> dict[str, str]:
    """Every `name=value` of the command line, in its order (a name given twice: its
    last value, at its first place), as `get_var` reads them."""
    return dict(doit_cmd._CMDLINE_VARS or {})


# --- loading tasks from a namespace made once the variables are read --------------------


class NamespaceLoader(NamespaceTaskLoader):
    """Loads DOIT_CONFIG and `task_*` creators from the dict `make_namespace` returns;
    called in `setup`, once doit has read the command line's variables (`get_var`)."""

    def make_namespace(self, opt_values: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def setup(self, opt_values: dict[str, Any]) -> None:
        self.namespace = self.make_namespace(opt_values)


# --- tests ------------------------------------------------------------------------------


@contextlib.contextmanager
def undone_after() -> Iterator[None]:
    """What this module installs in doit inside the block is undone after it."""
    saved = cmd_run.TaskControl, Dependency.close, loader.initial_workdir
    try:
        yield
    finally:
        cmd_run.TaskControl, Dependency.close, loader.initial_workdir = saved
