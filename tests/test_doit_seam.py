"""Canaries of buildlib.doit_seam: each test fails when the installed doit changes an
internal that one of the seam's functions relies on (then fix that function, not its
callers)."""

from __future__ import annotations

import inspect
import os
import sqlite3
from collections import deque
from pathlib import Path
from typing import Any

import pytest
from doit import cmd_run, get_var, loader, runner
from doit.cmd_base import ModuleTaskLoader
from doit.control import TaskControl, TaskDispatcher
from doit.dependency import Dependency, SqliteDB
from doit.doit_cmd import DoitMain
from doit.task import Task

from buildlib import doit_seam


def doit_run(tmp_path: Path, names: list[str], *args: str) -> list[str]:
    """Run doit in this process on one python-action task per name, none depending on
    another; return the order the actions ran in."""
    ran: list[str] = []

    def record(name: str) -> None:
        ran.append(name)

    def task_t():
        for name in names:
            yield {"name": name, "actions": [(record, [name])], "verbosity": 0}

    tasks = ModuleTaskLoader({"task_t": task_t,
                              "DOIT_CONFIG": {"dep_file": str(tmp_path / "state.json"),
                                              "backend": "json", "reporter": "zero"}})
    assert DoitMain(tasks).run([*args, "t"]) == 0
    return ran


# --- install_ready_queue -----------------------------------------------------------------


def test_doit_keeps_ready_tasks_in_a_deque_its_run_command_makes() -> None:
    """`ready` is a deque used through append and popleft, made by TaskDispatcher, which
    TaskControl.task_dispatcher returns and the run command's TaskControl makes."""
    dispatcher = TaskDispatcher({"t": Task("t", actions=[])}, {}, ["t"])
    assert isinstance(dispatcher.ready, deque), "doit no longer keeps ready tasks in a deque"
    assert cmd_run.TaskControl is TaskControl
    assert "self.ready.append(" in inspect.getsource(TaskDispatcher._update_waiting)
    assert "ready.popleft()" in inspect.getsource(TaskDispatcher._get_next_node)
    assert "TaskControl(" in inspect.getsource(cmd_run.Run._execute)


class Reversed:
    """A ready queue that pops the last task made ready first, and counts its pops."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.pops = 0

    def append(self, node: Any) -> None:
        self.nodes.append(node)

    def popleft(self) -> Any:
        self.pops += 1
        return self.nodes.pop()

    def __bool__(self) -> bool:
        return bool(self.nodes)


@pytest.mark.parametrize("args", [("-n", "1", "-P", "thread"), ()],
                         ids=["thread runner -n 1", "sequential runner"])
def test_an_installed_ready_queue_orders_a_doit_run(tmp_path: Path,
                                                    args: tuple[str, ...]) -> None:
    names = ["a", "b", "c", "d"]
    assert doit_run(tmp_path, names, *args) == names  # doit's own order: FIFO
    queues: list[Reversed] = []
    doit_seam.install_ready_queue(lambda: queues.append(Reversed()) or queues[-1])
    assert doit_seam.ready_queue_installed()
    assert doit_run(tmp_path, names, *args) == names[::-1]
    assert len(queues) == 1 and queues[0].pops >= len(names)


def test_undone_after_puts_doits_own_queue_back(tmp_path: Path) -> None:
    with doit_seam.undone_after():
        doit_seam.install_ready_queue(Reversed)
    assert not doit_seam.ready_queue_installed()
    assert doit_run(tmp_path, ["a", "b"]) == ["a", "b"]


# --- keep_state_save_errors ----------------------------------------------------------


def test_doit_saves_its_state_with_dependency_close_before_its_summary() -> None:
    finish = inspect.getsource(runner.Runner.finish)
    assert "self.dep_manager.close()" in finish
    assert finish.index("dep_manager.close()") < finish.index("complete_run()")


def test_an_error_saving_the_state_is_kept_not_raised(tmp_path: Path) -> None:
    def failing_state(name: str) -> Dependency:
        state = Dependency(SqliteDB, str(tmp_path / name))
        state.backend._conn.close()  # the write at the end now fails, as on a full disk
        return state

    with pytest.raises(sqlite3.Error):
        failing_state("doits.db").close()
    errors: list[Exception] = []
    doit_seam.keep_state_save_errors(errors)
    failing_state("kept.db").close()
    assert len(errors) == 1 and isinstance(errors[0], sqlite3.Error)


# --- SavedValuesCalculator ---------------------------------------------------------------


class SeesValues(doit_seam.SavedValuesCalculator):
    def __init__(self, other: str) -> None:
        super().__init__()
        self.other = other
        self.seen: dict[str, Any] | None = None

    def __call__(self, task: Any, values: dict[str, Any]) -> bool:
        self.seen = self.saved_values(self.other)
        return False


def test_an_up_to_date_check_reads_what_another_task_saved(tmp_path: Path) -> None:
    state = Dependency(SqliteDB, str(tmp_path / "state.db"))
    parent = Task("build:parent", actions=[])
    parent.values = {"id": "sha256:abc", "key": "k1"}
    state.save_success(parent)
    check = SeesValues("build:parent")
    never_ran = SeesValues("build:none")
    child = Task("build:child", actions=[], uptodate=[check, never_ran])
    status = state.get_status(child, {t.name: t for t in (parent, child)})
    assert status.status == "run"
    assert check.seen == {"id": "sha256:abc", "key": "k1"}
    assert set(check.tasks_dict) == {"build:parent", "build:child"}  # StateProbe reads it
    assert never_ran.seen == {}
    assert doit_seam.SavedValuesCalculator().saved_values("build:parent") == {}  # no setup


def test_doit_passes_task_and_values_as_an_up_to_date_checks_signature_says(
        tmp_path: Path) -> None:
    """doit asks `inspect.signature` of each check; one that states its `__signature__`
    gets what it names (in that order), though its `__call__` names nothing."""
    class Stated:
        __signature__ = doit_seam.TASK_AND_VALUES

        def __init__(self) -> None:
            self.given: tuple[Any, ...] = ()

        def __call__(self, *given: Any) -> bool:
            self.given = given
            return True

    check = Stated()
    task = Task("build:x", actions=[], uptodate=[check])
    state = Dependency(SqliteDB, str(tmp_path / "state.db"))
    assert state.get_status(task, {"build:x": task}).status == "up-to-date"
    assert len(check.given) == 2 and check.given[0] is task and check.given[1] == {}


# --- the command line ----------------------------------------------------------------


def test_loader_options_are_stripped_as_doit_reads_them() -> None:
    assert doit_seam.strip_loader_options(
        ["-f", "dodo.py", "-d", ".", "-k", "build", "config=x"]) == ["build", "config=x"]
    assert doit_seam.strip_loader_options(["--dir"]) == ["--dir"]  # no value: left as is


def test_doits_command_names() -> None:
    assert doit_seam.command_names() >= {"run", "list", "info", "clean", "forget", "ignore",
                                         "reset-dep", "strace", "help", "dumpdb"}


def test_run_options_give_jobs_and_tasks() -> None:
    assert doit_seam.run_options(["-n", "3", "-P", "thread", "build:x", "push"]) == (
        3, ["build:x", "push"])
    assert doit_seam.run_options(["--process=2", "build"]) == (2, ["build"])
    assert doit_seam.run_options(["build"]) == (None, ["build"])
    assert doit_seam.run_options(["--no-such-option"]) is None


# --- where the user ran the command ----------------------------------------------------


def test_doit_notes_the_users_folder_when_it_loads_a_dodo_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    user, tree = tmp_path / "user", tmp_path / "tree"
    user.mkdir()
    tree.mkdir()
    (tree / "dodo.py").write_text("")
    monkeypatch.chdir(user)
    loader.get_module(str(tree / "dodo.py"))  # changes into dodo.py's folder, as doit does
    assert Path.cwd() == tree
    assert doit_seam.user_workdir() == user


def test_a_remembered_folder_is_the_users(tmp_path: Path) -> None:
    doit_seam.remember_initial_workdir(tmp_path)
    assert doit_seam.user_workdir() == tmp_path
    loader.initial_workdir = None
    assert doit_seam.user_workdir() == Path(os.getcwd())


# --- NamespaceLoader ---------------------------------------------------------------------


def test_a_namespace_made_in_setup_sees_the_variables_and_its_tasks_run(tmp_path: Path) -> None:
    ran: list[str] = []

    class Loader(doit_seam.NamespaceLoader):
        def make_namespace(self, opt_values: dict[str, Any]) -> dict[str, Any]:
            word = get_var("word")

            def say() -> None:
                ran.append(word)

            def task_say():
                return {"actions": [say], "verbosity": 0}

            return {"task_say": task_say,
                    "DOIT_CONFIG": {"dep_file": str(tmp_path / "state.json"),
                                    "backend": "json", "reporter": "zero"}}

    assert DoitMain(Loader()).run(["say", "word=hello"]) == 0
    assert ran == ["hello"]


def test_command_line_variables_are_every_name_value_in_order(tmp_path: Path) -> None:
    seen: list[dict[str, str]] = []

    class Loader(doit_seam.NamespaceLoader):
        def make_namespace(self, opt_values: dict[str, Any]) -> dict[str, Any]:
            seen.append(doit_seam.command_line_variables())
            return {"task_noop": lambda: {"actions": [], "verbosity": 0},
                    "DOIT_CONFIG": {"dep_file": str(tmp_path / "state.json"),
                                    "backend": "json", "reporter": "zero"}}

    argv = ["noop", "set.b.x=1", "set.a.y=k=v", "set.b.x=2"]
    assert DoitMain(Loader()).run(argv) == 0
    assert list(seen[0].items()) == [("set.b.x", "2"), ("set.a.y", "k=v")]
