"""The `imagebake` command: doit's command line with imagebake's tasks built in, over the
images.yaml in the working directory (`-c FILE` or `config=FILE` for another; `-c` again,
or `-c A,B`, for a file merged on top: paths hold no comma), and `--set IMAGE.FIELD=VALUE`
for a change of this run only.

`imagebake build`, `imagebake -n 8 push`, `imagebake list`, `imagebake info build:x` are
the doit commands dodo.py gives, on the same task creators (`tasks.namespace`); state
stays in that tree's build_dir.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from doit.doit_cmd import DoitMain

from buildlib import doit_seam, options, run, tasks

PROGRAM = "imagebake"
CONFIG_OPTIONS = ("-c", "--config")
SET_OPTION = "--set"


class TreeLoader(doit_seam.NamespaceLoader):
    """Loads the tasks of the tree in the working directory, once doit has read the
    command line's variables (`config=`, `images=`, ...)."""

    def __init__(self, argv: list[str]) -> None:
        super().__init__()
        self.argv = argv

    def make_namespace(self, opt_values: dict[str, Any]) -> dict[str, Any]:
        doit_seam.remember_initial_workdir(os.getcwd())  # where relative `config=` starts
        this_run = run.load_run(Path.cwd(), self.argv, PROGRAM)
        os.chdir(this_run.project.config.root)  # as doit does for dodo.py's folder
        return tasks.namespace(this_run)


class ImagebakeMain(DoitMain):
    BIN_NAME = PROGRAM


def config_as_variable(argv: list[str]) -> list[str]:
    """`-c FILE`, `--config FILE` and `--config=FILE` become doit's `config=FILE` (doit's
    own `-c`, `--continue`, is what imagebake does anyway unless `fail_fast=1`), several
    of them (or `-c A,B`) one `config=A,B`; `--set PATH=VALUE` (or `--set=PATH=VALUE`)
    becomes the variable `set.PATH=VALUE`."""
    result, files, words = [], [], iter(argv)
    at = 0  # where the first -c was
    for word in words:
        option, equals, value = word.partition("=")
        if option in (*CONFIG_OPTIONS, SET_OPTION) and not equals:
            value = next(words, "")
        if option in CONFIG_OPTIONS and (option != "-c" or not equals):
            at = at if files else len(result)
            files += [file for file in value.split(",") if file]
        elif option == SET_OPTION:
            result.append(options.SET_PREFIX + value)
        else:
            result.append(word)
    return result[:at] + ([f"config={','.join(files)}"] if files else []) + result[at:]


def main(argv: list[str] | None = None) -> int:
    args = config_as_variable(sys.argv[1:] if argv is None else argv)
    return ImagebakeMain(TreeLoader(args)).run(args)


if __name__ == "__main__":
    sys.exit(main())
