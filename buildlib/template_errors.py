"""A Jinja2 error while rendering a template, as an InputError that names the template's
file and line and the fix (a filter or function not registered, an undefined variable)."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from buildlib.errors import InputError

if TYPE_CHECKING:
    import jinja2


def syntax_error(config_path: Path, name: str, err: jinja2.TemplateSyntaxError
                 ) -> InputError:
    where = f"{err.filename}:{err.lineno}"
    unknown = re.match(r"No (filter|test) named '([^']+)'", err.message or "")
    if unknown and unknown.group(1) == "filter":
        return InputError(config_path, f"template {where} uses the filter "
                          f"'{unknown.group(2)}', which is not registered", image=name,
                          fix=f"register it in images.yaml: `jinja: {{filters: "
                          f"{{{unknown.group(2)}: module:function}}}}` (Kolla's come with "
                          "`kolla:`), or correct its name")
    return InputError(config_path, f"template syntax error in {where}: {err.message}",
                      image=name, fix="correct the template")


def undefined_error(config_path: Path, template_dirs: list[Path], name: str,
                    err: jinja2.UndefinedError) -> InputError:
    where = where_in_template(template_dirs)
    missing = re.match(r"'([^']+)' is undefined", err.message or "")
    if missing and _called_at(where, missing.group(1)):
        function = missing.group(1)
        return InputError(config_path, f"template {where} calls the function '{function}', "
                          "which is not registered", image=name,
                          fix=f"register it in images.yaml: `jinja: {{globals: {{{function}: "
                          "module:function}}`, or correct its name")
    return InputError(config_path, f"template {where}: {err.message}", image=name,
                      fix="define the variable under `vars:` (globally or for this image) "
                      "or correct its name")


def _called_at(where: str, function: str) -> bool:
    """Whether the template line `file:line` calls `function(...)`."""
    filename, _, line = where.rpartition(":")
    try:
        text = Path(filename).read_text(encoding="utf-8").splitlines()[int(line) - 1]
    except (OSError, ValueError, IndexError):
        return False
    return re.search(rf"\b{re.escape(function)}\s*\(", text) is not None


def where_in_template(template_dirs: list[Path]) -> str:
    """file:line of the innermost template frame of the exception being handled."""
    folders = [str(d.resolve()) + os.sep for d in template_dirs]
    tb, where = sys.exc_info()[2], "rendering"
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.startswith(tuple(folders)):
            where = f"{filename}:{tb.tb_lineno}"
        tb = tb.tb_next
    return where
