"""buildlib.project.load renders every template; render errors are one clear InputError."""

from __future__ import annotations

import dataclasses
import os
import stat
import textwrap
from pathlib import Path

import pytest
import yaml

from buildlib import dockerfile as dockerfile_reading
from buildlib import keys, project, render, tree_files
from buildlib.errors import InputError

REPO = Path(__file__).resolve().parents[1]
ROOT_T = "FROM scratch\n"
CHILD_T = "FROM {{ parent_image }}\n"
TWO = "images:\n  base:\n  child: {parent: base}\n"


def make_tree(tmp_path: Path, images_yaml: str, files: dict[str, str]) -> Path:
    """images.yaml plus `files` (paths relative to the tree); returns images.yaml."""
    for relative, text in files.items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    config = tmp_path / "images.yaml"
    config.write_text(textwrap.dedent(images_yaml), encoding="utf-8")
    return config


def load_error(config: Path, image: str) -> str:
    with pytest.raises(InputError) as info:
        project.load(config)
    message = str(info.value)
    assert str(config.resolve()) in message, message
    assert f"image '{image}'" in message, message
    assert info.value.image == image
    assert "fix:" in message, message
    return message


def tpl(tmp_path: Path, relative: str) -> str:
    return str((tmp_path / "templates" / relative).resolve())


# --- errors ---------------------------------------------------------------------------------


def test_undefined_variable_names_template_line_and_image(tmp_path: Path) -> None:
    config = make_tree(tmp_path, TWO, {
        "templates/base/Dockerfile.j2": ROOT_T,
        "templates/child/Dockerfile.j2": "FROM {{ parent_image }}\n\nRUN echo {{ nope }}\n",
    })
    message = load_error(config, "child")
    assert f"{tpl(tmp_path, 'child/Dockerfile.j2')}:3" in message
    assert "'nope' is undefined" in message
    assert "vars:" in message


def test_undefined_variable_in_a_shared_macro_names_the_macro_file(tmp_path: Path) -> None:
    config = make_tree(tmp_path, TWO, {
        "templates/base/Dockerfile.j2": ROOT_T,
        "templates/macros.j2": "{% macro run() -%}\n\nRUN {{ missing_var }}\n{%- endmacro %}\n",
        "templates/child/Dockerfile.j2":
            "{% import 'macros.j2' as m with context %}\nFROM {{ parent_image }}\n{{ m.run() }}\n",
    })
    message = load_error(config, "child")
    assert f"{tpl(tmp_path, 'macros.j2')}:3" in message
    assert "missing_var" in message


def test_undefined_attribute_of_settings(tmp_path: Path) -> None:
    config = make_tree(tmp_path, TWO, {
        "templates/base/Dockerfile.j2": ROOT_T,
        "templates/child/Dockerfile.j2": "FROM {{ parent_image }}\nRUN {{ settings.nope }}\n",
    })
    message = load_error(config, "child")
    assert f"{tpl(tmp_path, 'child/Dockerfile.j2')}:2" in message
    assert "nope" in message


def test_undefined_variable_in_a_template_not_named_j2(tmp_path: Path) -> None:
    config = make_tree(tmp_path, "images:\n  base: {template: base/Dockerfile.tmpl}\n", {
        "templates/base/Dockerfile.tmpl": "FROM scratch\nRUN {{ nope }}\n",
    })
    message = load_error(config, "base")
    assert f"{tpl(tmp_path, 'base/Dockerfile.tmpl')}:2" in message


def test_template_syntax_error(tmp_path: Path) -> None:
    config = make_tree(tmp_path, TWO, {
        "templates/base/Dockerfile.j2": ROOT_T,
        "templates/child/Dockerfile.j2": "FROM {{ parent_image }}\n{% if %}\nRUN x\n{% endif %}\n",
    })
    message = load_error(config, "child")
    assert "syntax error" in message
    assert f"{tpl(tmp_path, 'child/Dockerfile.j2')}:2" in message


def test_syntax_error_in_an_included_file_names_that_file(tmp_path: Path) -> None:
    config = make_tree(tmp_path, TWO, {
        "templates/base/Dockerfile.j2": ROOT_T,
        "templates/common.j2": "RUN one\n{{ a b }}\n",
        "templates/child/Dockerfile.j2": "FROM {{ parent_image }}\n{% include 'common.j2' %}\n",
    })
    message = load_error(config, "child")
    assert f"{tpl(tmp_path, 'common.j2')}:2" in message


def test_unknown_filter(tmp_path: Path) -> None:
    config = make_tree(tmp_path, TWO, {
        "templates/base/Dockerfile.j2": "FROM scratch\nRUN {{ 'x' | shout }}\n",
        "templates/child/Dockerfile.j2": CHILD_T,
    })
    message = load_error(config, "base")
    assert "filter 'shout', which is not registered" in message
    assert "jinja: {filters: {shout: module:function}}" in message
    assert "syntax error" not in message


def test_unknown_function(tmp_path: Path) -> None:
    config = make_tree(tmp_path, TWO, {
        "templates/base/Dockerfile.j2": "FROM scratch\nRUN {{ install(['curl']) }}\n",
        "templates/child/Dockerfile.j2": CHILD_T,
    })
    message = load_error(config, "base")
    assert "calls the function 'install', which is not registered" in message
    assert "jinja: {globals: {install: module:function}}" in message


def test_registered_filters_and_globals(tmp_path: Path) -> None:
    jinja = ("jinja:\n  filters: {shout: tree_helpers:shout}\n"
             "  globals: {install: tree_helpers:install, sep: os:sep}\n")
    config = make_tree(tmp_path, TWO + jinja, {
        "tree_helpers.py": """\
            def shout(text):
                return text.upper() + "!"

            def install(packages):
                return "apt-get install -y " + " ".join(packages)
            """,
        "templates/base/Dockerfile.j2": "FROM scratch\nRUN {{ install(['curl', 'jq']) }}\n"
                                        "LABEL x={{ 'hi' | shout }}{{ sep }}\n",
        "templates/child/Dockerfile.j2": CHILD_T,
    })
    assert project.load(config).plans["base"].context.dockerfile == (
        "FROM scratch\nRUN apt-get install -y curl jq\nLABEL x=HI!/\n")


@pytest.mark.parametrize("path, problem", [
    ("no_such_module_here:f", "cannot import no_such_module_here"),
    ("os.path:no_such_function", "os.path has no 'no_such_function'"),
], ids=["no-module", "no-attribute"])
def test_registered_filter_that_does_not_import(tmp_path: Path, path: str, problem: str) -> None:
    config = make_tree(tmp_path, TWO + f"jinja: {{filters: {{f: '{path}'}}}}\n", {
        "templates/base/Dockerfile.j2": ROOT_T, "templates/child/Dockerfile.j2": CHILD_T})
    with pytest.raises(InputError) as info:
        project.load(config)
    assert f"jinja.filters.f: {problem}" in str(info.value)
    assert info.value.fix


@pytest.mark.parametrize("expression", ["{{ port + 'x' }}", "{{ 1 // 0 }}"],
                         ids=["type-error", "zero-division"])
def test_runtime_error_in_template(tmp_path: Path, expression: str) -> None:
    config = make_tree(tmp_path, "images:\n  base: {vars: {port: 8774}}\n", {
        "templates/base/Dockerfile.j2": f"FROM scratch\nEXPOSE {expression}\n",
    })
    message = load_error(config, "base")
    assert f"{tpl(tmp_path, 'base/Dockerfile.j2')}:2" in message


def test_template_not_found(tmp_path: Path) -> None:
    config = make_tree(tmp_path, TWO, {"templates/base/Dockerfile.j2": ROOT_T})
    message = load_error(config, "child")
    assert "'child/Dockerfile.j2' not found" in message
    assert str((tmp_path / "templates").resolve()) in message
    assert "template:" in message


def test_named_template_not_found(tmp_path: Path) -> None:
    config = make_tree(tmp_path, "images:\n  base: {template: shared/root.j2}\n", {
        "templates/base/Dockerfile.j2": ROOT_T,
    })
    message = load_error(config, "base")
    assert "'shared/root.j2' not found" in message


def test_extended_layout_not_found(tmp_path: Path) -> None:
    config = make_tree(tmp_path, TWO, {
        "templates/base/Dockerfile.j2": ROOT_T,
        "templates/child/Dockerfile.j2": "{% extends 'layout.j2' %}\n",
    })
    message = load_error(config, "child")
    assert "'layout.j2' not found" in message


def test_missing_files_source(tmp_path: Path) -> None:
    config = make_tree(tmp_path, "images:\n  base: {files: {busybox: bin/busybox}}\n", {
        "templates/base/Dockerfile.j2": ROOT_T,
    })
    message = load_error(config, "base")
    assert "'busybox'" in message
    assert str((tmp_path / "bin" / "busybox").resolve()) in message
    assert "files:" in message


@pytest.mark.parametrize("inner", ["../escape", "/etc/passwd"])
def test_files_name_must_stay_in_the_context(tmp_path: Path, inner: str) -> None:
    config = make_tree(tmp_path, f"images:\n  base: {{files: {{{inner!r}: data}}}}\n", {
        "templates/base/Dockerfile.j2": ROOT_T,
        "data": "x\n",
    })
    message = load_error(config, "base")
    assert inner in message


@pytest.mark.parametrize("child", [
    "FROM alpine:3.20\n",
    "FROM localhost:5000/kolla/base:other\n",
    "FROM localhost:5000/kolla/base\n",
    "FROM {{ parent_image }}-x\n",
    "RUN true\nFROM {{ parent_image }}\n",
    "# no FROM at all\nRUN true\n",
    "",
], ids=["other-image", "other-tag", "no-tag", "suffix", "run-first", "no-from", "empty"])
def test_child_must_start_from_its_parent(tmp_path: Path, child: str) -> None:
    config = make_tree(tmp_path, TWO, {
        "templates/base/Dockerfile.j2": ROOT_T,
        "templates/child/Dockerfile.j2": child,
    })
    message = load_error(config, "child")
    assert "localhost:5000/kolla/base:latest" in message
    assert "FROM {{ parent_image }}" in message


@pytest.mark.parametrize("root", ["RUN true\n", "", "# FROM scratch\nRUN true\n",
                                  "ARG X=1\n"], ids=["run", "empty", "commented", "arg-only"])
def test_root_must_start_with_from(tmp_path: Path, root: str) -> None:
    config = make_tree(tmp_path, "images:\n  base:\n", {"templates/base/Dockerfile.j2": root})
    message = load_error(config, "base")
    assert "FROM" in message


def test_graph_errors_come_through_as_input_errors(tmp_path: Path) -> None:
    config = make_tree(tmp_path, "images:\n  a: {parent: c}\n  b: {parent: a}\n  c: {parent: b}\n",
                       {})
    message = load_error(config, "a")
    assert "cycle" in message
    config = make_tree(tmp_path, "images:\n  child: {parent: ghost}\n", {})
    message = load_error(config, "child")
    assert "'ghost'" in message


# --- what templates see ---------------------------------------------------------------------


def test_template_variables(tmp_path: Path) -> None:
    config = make_tree(tmp_path, """\
        settings: {registry: reg.example:5000, namespace: team, tag: v2, jobs: 3}
        vars: {color: red, shape: round}
        images:
          base:
          child:
            parent: base
            vars: {color: blue, port: 8774}
        """, {
        "templates/base/Dockerfile.j2": "FROM scratch\nENV COLOR={{ color }} SHAPE={{ shape }}\n",
        "templates/child/Dockerfile.j2": """\
            FROM {{ parent_image }}
            LABEL name={{ image_name }} image={{ image }} tag={{ tag }}
            ENV COLOR={{ color }} SHAPE={{ shape }} PORT={{ port }}
            ENV REG={{ settings.registry }} NS={{ settings.namespace }} JOBS={{ settings.jobs }}
            """,
    })
    plans = project.load(config).plans
    assert plans["base"].context.dockerfile == "FROM scratch\nENV COLOR=red SHAPE=round\n"
    assert plans["child"].context.dockerfile == (
        "FROM reg.example:5000/team/base:v2\n"
        "LABEL name=child image=reg.example:5000/team/child:v2 tag=v2\n"
        "ENV COLOR=blue SHAPE=round PORT=8774\n"
        "ENV REG=reg.example:5000 NS=team JOBS=3\n"
    )


def test_settings_are_seen_under_settings_only(tmp_path: Path) -> None:
    """A setting is `settings.registry`, so Jinja's own `namespace()` stays usable."""
    config = make_tree(tmp_path, TWO, {
        "templates/base/Dockerfile.j2": """\
            FROM scratch
            {% set ns = namespace(count=0) %}{% for _ in [1, 2] %}
            {%- set ns.count = ns.count + 1 %}{% endfor %}
            RUN echo {{ ns.count }} {{ settings.namespace }}
            """,
        "templates/child/Dockerfile.j2": "FROM {{ parent_image }}\nRUN echo {{ registry }}\n",
    })
    message = load_error(config, "child")
    assert "'registry' is undefined" in message
    (tmp_path / "templates/child/Dockerfile.j2").write_text(CHILD_T)
    assert project.load(config).plans["base"].context.dockerfile == (
        "FROM scratch\n\nRUN echo 2 kolla\n")


def test_an_image_var_does_not_leak_to_other_images(tmp_path: Path) -> None:
    config = make_tree(tmp_path, """\
        images:
          base: {vars: {only_here: 1}}
          child: {parent: base}
        """, {
        "templates/base/Dockerfile.j2": "FROM scratch\nRUN echo {{ only_here }}\n",
        "templates/child/Dockerfile.j2": "FROM {{ parent_image }}\nRUN echo {{ only_here }}\n",
    })
    message = load_error(config, "child")
    assert "only_here" in message


def test_inheritance_and_macros_from_shared_files(tmp_path: Path) -> None:
    config = make_tree(tmp_path, """\
        vars: {user: kolla}
        images:
          base:
          nova-api: {parent: base, vars: {port: 8774}}
        """, {
        "templates/macros.j2": """\
            {% macro start(command) -%}
            CMD ["{{ command }}"]
            {%- endmacro %}
            """,
        "templates/layout.j2": """\
            {% import "macros.j2" as m with context %}
            FROM {{ parent_image }}
            LABEL name="{{ image_name }}"
            {% block configure %}{% endblock %}
            USER {{ user }}
            """,
        "templates/base/Dockerfile.j2": ROOT_T,
        "templates/nova-api/Dockerfile.j2": """\
            {% extends "layout.j2" %}
            {% import "macros.j2" as m with context %}
            {% block configure %}
            EXPOSE {{ port }}
            {{ m.start("nova-api") }}
            {% endblock %}
            """,
    })
    text = project.load(config).plans["nova-api"].context.dockerfile
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines == [
        "FROM localhost:5000/kolla/base:latest",
        'LABEL name="nova-api"',
        "EXPOSE 8774",
        'CMD ["nova-api"]',
        "USER kolla",
    ]


def test_template_search_path_first_match_wins(tmp_path: Path) -> None:
    config = make_tree(tmp_path, """\
        settings: {templates: [overrides, templates]}
        images:
          base:
          child: {parent: base}
        """, {
        "templates/base/Dockerfile.j2": ROOT_T,
        "templates/child/Dockerfile.j2": CHILD_T + "RUN original\n",
        "overrides/child/Dockerfile.j2": CHILD_T + "RUN override\n",
    })
    plans = project.load(config).plans
    assert plans["child"].context.dockerfile.endswith("RUN override\n")
    assert plans["base"].context.dockerfile == ROOT_T


def test_child_may_use_arg_platform_and_stage_name(tmp_path: Path) -> None:
    config = make_tree(tmp_path, TWO, {
        "templates/base/Dockerfile.j2": "# syntax=docker/dockerfile:1\nFROM scratch AS root\n",
        "templates/child/Dockerfile.j2": """\
            # a comment first
            ARG VERSION=1
            FROM --platform=linux/amd64 \\
                {{ parent_image }} AS build
            RUN true
            """,
    })
    plan = project.load(config).plans["child"]
    assert plan.parent == "base"
    assert "localhost:5000/kolla/base:latest AS build" in plan.context.dockerfile


# --- build contexts -------------------------------------------------------------------------


@pytest.fixture
def context_tree(tmp_path: Path) -> Path:
    config = make_tree(tmp_path, """\
        images:
          base:
            files: {tool: bin/tool, data: datadir}
        """, {
        "templates/base/Dockerfile.j2": "FROM scratch\nCOPY start.sh /start.sh\n",
        "templates/base/start.sh": "#!/bin/sh\necho start\n",
        "templates/base/conf/app.conf": "[app]\n",
        "templates/base/snippet.j2": "{# a template, not a context file #}\n",
        "bin/tool": "#!/bin/sh\necho tool\n",
        "datadir/a.txt": "a\n",
        "datadir/sub/b.txt": "b\n",
    })
    (tmp_path / "templates/base/start.sh").chmod(0o755)
    (tmp_path / "templates/base/conf/app.conf").chmod(0o644)
    (tmp_path / "bin/tool").chmod(0o750)
    return config


def base_context(config: Path) -> render.Context:
    return project.load(config).plans["base"].context


def test_context_files(context_tree: Path) -> None:
    context = base_context(context_tree)
    root = context_tree.parent.resolve()
    assert context.files == {
        "start.sh": root / "templates/base/start.sh",
        "conf/app.conf": root / "templates/base/conf/app.conf",
        "tool": root / "bin/tool",
        "data/a.txt": root / "datadir/a.txt",
        "data/sub/b.txt": root / "datadir/sub/b.txt",
    }
    assert context.template == root / "templates/base/Dockerfile.j2"


def test_an_empty_folder_under_files_is_an_empty_folder_in_the_context(tmp_path: Path) -> None:
    config = make_tree(tmp_path, "images:\n  base: {files: {patches: empty}}\n", {
        "templates/base/Dockerfile.j2": "FROM scratch\nCOPY patches /patches\n"})
    (tmp_path / "empty").mkdir()
    context = base_context(config)
    assert context.missing_sources() == []  # `COPY patches` finds it
    digest = context.file_digests()["patches"]
    out = tmp_path / "out"
    context.write(out / "Dockerfile", out / "context")
    assert (out / "context" / "patches").is_dir()
    assert list((out / "context" / "patches").iterdir()) == []
    assert tree_files.context_file_digest(out / "context" / "patches") == digest  # as a build
    (tmp_path / "empty").chmod(0o700)  # its mode is what it is made of
    assert base_context(config).file_digests()["patches"] != digest


def test_context_write_copies_files_and_keeps_modes(context_tree: Path, tmp_path: Path) -> None:
    context = base_context(context_tree)
    out = tmp_path / "out"
    dockerfile, context_dir = out / "Dockerfile", out / "context"
    out.mkdir()
    context.write(dockerfile, context_dir)
    assert dockerfile.read_text() == "FROM scratch\nCOPY start.sh /start.sh\n"
    written = sorted(str(p.relative_to(context_dir)) for p in context_dir.rglob("*")
                     if p.is_file())
    assert written == ["conf/app.conf", "data/a.txt", "data/sub/b.txt", "start.sh", "tool"]
    assert (context_dir / "tool").read_text() == "#!/bin/sh\necho tool\n"
    assert (context_dir / "data/sub/b.txt").read_text() == "b\n"
    assert stat.S_IMODE((context_dir / "start.sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((context_dir / "tool").stat().st_mode) == 0o750
    assert stat.S_IMODE((context_dir / "conf/app.conf").stat().st_mode) == 0o644
    assert os.access(context_dir / "start.sh", os.X_OK)


def test_context_write_leaves_no_stale_files(context_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "context").mkdir(parents=True)
    (out / "context" / "removed-since.sh").write_text("old\n")
    base_context(context_tree).write(out / "Dockerfile", out / "context")
    assert not (out / "context" / "removed-since.sh").exists()
    assert (out / "context" / "start.sh").exists()


def key_of(context: render.Context, reads_all: bool = True) -> str:
    """The content key of this context alone (as keys.Record hashes it for a build); with
    `reads_all`, of its Dockerfile with a COPY of the whole context added."""
    if reads_all:
        context = dataclasses.replace(context, dockerfile=context.dockerfile + "COPY . /all\n")
    return keys.Record(context.dockerfile_digest(), context.file_digests()).key


def test_files_no_copy_reads_and_comments_are_no_part_of_the_key(context_tree: Path) -> None:
    before = key_of(base_context(context_tree), reads_all=False)  # COPY start.sh only
    (context_tree.parent / "templates/base/conf/app.conf").write_text("unread\n")
    (context_tree.parent / "templates/base/new.txt").write_text("unread\n")
    template = context_tree.parent / "templates/base/Dockerfile.j2"
    template.write_text("# a comment\n\n" + template.read_text().replace(
        "COPY", "  # another\nCOPY") + "#end\n")
    assert key_of(base_context(context_tree), reads_all=False) == before
    (context_tree.parent / "templates/base/start.sh").write_text("read\n")
    assert key_of(base_context(context_tree), reads_all=False) != before


@pytest.mark.parametrize(("dockerfile", "read"), [
    ("COPY conf /etc/conf\n", {"conf/app.conf"}),
    ("COPY ./conf/ /etc/\n", {"conf/app.conf"}),
    ("ADD [\"tool\", \"data/*.txt\", \"/x/\"]\n", {"tool", "data/a.txt"}),
    ("COPY d*/ /x/\n", {"data/a.txt", "data/sub/b.txt"}),
    ("COPY --from=builder /all /\nCOPY --chown=1:1 start.sh /\n", {"start.sh"}),
    ("ARG F=tool\nCOPY ${F} /x\n", {"start.sh", "tool", "conf/app.conf", "data/a.txt",
                                    "data/sub/b.txt"}),
    ("RUN --mount=type=bind,source=data/sub,target=/s cat /s/b.txt\n", {"data/sub/b.txt"}),
    ("RUN --mount=type=bind,from=other,source=/x,target=/s true\n", set()),
])
def test_read_by_follows_copy_add_and_bind_sources(dockerfile: str, read: set[str]) -> None:
    files = ["start.sh", "tool", "conf/app.conf", "data/a.txt", "data/sub/b.txt"]
    reads = dockerfile_reading.context_read("FROM scratch\n" + dockerfile)
    assert {f for f in files if reads(f)} == read


def test_the_key_reads_the_dockerfile_as_buildah_does() -> None:
    """Comments, blank lines and how lines are continued are no part of what buildah reads;
    the escape directive is, and a here-document's lines are instructions to buildah 1.28."""
    def canonical(text: str) -> str:
        return dockerfile_reading.parse(text).canonical()

    assert canonical("# note\nFROM a\n\n  # b\nRUN c \\\n  # d\n  e\n") == canonical(
        "FROM a\nRUN c \\\n  e\n")
    assert canonical("# escape=`\nFROM a\nRUN c \\\nCOPY s /s\n") != canonical(
        "FROM a\nRUN c \\\nCOPY s /s\n")
    assert [i.keyword for i in dockerfile_reading.parse(
        "# escape=`\nFROM a\nRUN c \\\nCOPY s /s\n").instructions] == ["from", "run", "copy"]
    here = dockerfile_reading.parse("FROM a\nRUN <<EOF\n# data\necho\nEOF\n")
    assert [i.keyword for i in here.instructions] == ["from", "run", "echo", "eof"]


def test_digest_is_stable(context_tree: Path) -> None:
    first = key_of(base_context(context_tree))
    assert key_of(base_context(context_tree)) == first
    start = context_tree.parent / "templates/base/start.sh"
    os.utime(start, (1, 1))  # a new mtime alone is no change
    assert key_of(base_context(context_tree)) == first


@pytest.mark.parametrize("relative", ["templates/base/start.sh", "templates/base/conf/app.conf",
                                      "bin/tool", "datadir/sub/b.txt"])
def test_digest_follows_file_content(context_tree: Path, relative: str) -> None:
    path = context_tree.parent / relative
    before = key_of(base_context(context_tree))
    original = path.read_text()
    path.write_text(original + "# changed\n")
    assert key_of(base_context(context_tree)) != before
    path.write_text(original)
    assert key_of(base_context(context_tree)) == before


@pytest.mark.parametrize("relative", ["templates/base/conf/app.conf", "bin/tool",
                                      "datadir/a.txt"])
def test_digest_follows_file_mode(context_tree: Path, relative: str) -> None:
    path = context_tree.parent / relative
    before = key_of(base_context(context_tree))
    path.chmod(stat.S_IMODE(path.stat().st_mode) ^ 0o111)
    assert key_of(base_context(context_tree)) != before


def test_digest_follows_added_and_renamed_files(context_tree: Path) -> None:
    folder = context_tree.parent / "templates/base"
    before = key_of(base_context(context_tree))
    (folder / "conf/app.conf").rename(folder / "conf/other.conf")
    renamed = key_of(base_context(context_tree))
    assert renamed != before
    (folder / "extra.txt").write_text("")
    assert key_of(base_context(context_tree)) not in {before, renamed}


def test_digest_ignores_other_templates_beside_it(context_tree: Path) -> None:
    before = key_of(base_context(context_tree))
    (context_tree.parent / "templates/base/snippet.j2").write_text("{# edited #}\n")
    assert key_of(base_context(context_tree)) == before


def test_digest_follows_the_dockerfile(context_tree: Path) -> None:
    context = base_context(context_tree)
    changed = dataclasses.replace(context, dockerfile=context.dockerfile + "RUN true\n")
    assert key_of(changed) != key_of(context)
    template = context_tree.parent / "templates/base/Dockerfile.j2"
    template.write_text(template.read_text() + "ENV X=1\n")
    assert key_of(base_context(context_tree)) != key_of(context)


# --- first_from -----------------------------------------------------------------------------


@pytest.mark.parametrize(("dockerfile", "expected"), [
    ("FROM img\n", "img"),
    ("from img\n", "img"),
    ("  FROM img:1 AS build\n", "img:1"),
    ("ARG BASE=x\nARG V\nFROM img\n", "img"),
    ("FROM --platform=linux/amd64 img\n", "img"),
    ("FROM --platform=$BUILDPLATFORM img AS b\nFROM other\n", "img"),
    ("# syntax=docker/dockerfile:1\n\n# comment\nFROM img\n", "img"),
    ("FROM \\\n  img \\\n  AS x\n", "img"),
    ("FROM \\\n  # comment inside a continuation\n  img\n", "img"),
    ("ARG A=1 \\\n  B=2\nFROM img\n", "img"),
    ("RUN x\nFROM img\n", None),
    ("ARG A\nARG B\n", None),
    ("", None),
    ("# FROM img\n", None),
    ("FROM\n", None),
], ids=["plain", "lowercase", "indented-stage", "args-first", "platform", "platform-stages",
        "comments", "continuation", "comment-in-continuation", "arg-continuation", "run-first",
        "args-only", "empty", "commented", "bare-from"])
def test_first_from(dockerfile: str, expected: str | None) -> None:
    assert dockerfile_reading.first_from(dockerfile) == expected


def test_first_from_with_a_tab() -> None:
    assert dockerfile_reading.first_from("FROM\timg\n") == "img"


# --- the example tree -----------------------------------------------------------------------


def test_example_renders() -> None:
    config_path = REPO / "images.yaml"
    declared = yaml.safe_load(config_path.read_text())["images"]
    proj = project.load(config_path)
    assert set(proj.plans) == set(declared)
    for name, plan in proj.plans.items():
        text = plan.context.dockerfile
        parent = proj.graph.parents[name]
        assert parent == (declared[name] or {}).get("parent")
        if parent is None:
            assert dockerfile_reading.first_from(text) is not None, name
        else:
            assert dockerfile_reading.first_from(text) == proj.config.reference(parent), name
        assert "{{" not in text and "{%" not in text, name
        assert plan.reference == proj.config.reference(name)
        for inner, source in plan.context.files.items():
            assert source.exists(), (name, inner)
            assert not inner.endswith(".j2"), (name, inner)


# --- what a build takes from its context ----------------------------------------------------


def test_context_sources() -> None:
    dockerfile = textwrap.dedent("""\
        FROM scratch AS one
        COPY start.sh /usr/local/bin/
        COPY --chown=1:1 --chmod=755 a.sh ./b/c.sh /opt/
        ADD ["with space.txt", "/x/"]
        ADD https://example.com/file.tgz /tmp/
        COPY --from=one /etc/passwd /etc/
        COPY $CONFIG /etc/
        COPY 'quoted' "dq" /etc/
          ADD nova-base-archive /nova-base-source
        COPY . /src
        """)
    assert dockerfile_reading.sources_in(dockerfile) == [
        ("COPY", "start.sh"), ("COPY", "a.sh"), ("COPY", "b/c.sh"), ("ADD", "with space.txt"),
        ("COPY", "quoted"), ("COPY", "dq"), ("ADD", "nova-base-archive"), ("COPY", ".")]


def test_missing_sources(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "app.conf").write_text("")
    (tmp_path / "start.sh").write_text("")
    files = {"start.sh": tmp_path / "start.sh", "conf/app.conf": tmp_path / "conf" / "app.conf"}
    dockerfile = ("FROM scratch\nCOPY start.sh conf/app.conf conf /x/\nCOPY conf/*.conf /y/\n"
                  "ADD nova-base-archive /src\nCOPY *.txt /z/\n")
    context = render.Context("nova-base", dockerfile, files, tmp_path / "Dockerfile.j2")
    assert context.missing_sources() == ["ADD 'nova-base-archive'", "COPY '*.txt'"]
# --- links and what a context may hold (issue 9, item 5) ------------------------------------


def linked_tree(tmp_path: Path, files: str = "{}") -> Path:
    return make_tree(tmp_path, f"images:\n  base: {{files: {files}}}\n", {
        "templates/base/Dockerfile.j2": "FROM scratch\nCOPY . /\n",
        "templates/base/conf/app.conf": "[app]\n",
    })


def test_a_link_out_of_the_template_folder_is_an_input_error(tmp_path: Path) -> None:
    config = linked_tree(tmp_path)
    (tmp_path / "templates/base/passwd").symlink_to("/etc/passwd")
    message = load_error(config, "base")
    assert "links to /etc/passwd, outside" in message
    assert "declare it under `files:` (`passwd: /etc/passwd`)" in message


def test_a_link_out_of_the_folder_declared_in_files_is_taken(tmp_path: Path) -> None:
    config = linked_tree(tmp_path, "{passwd: /etc/passwd}")
    (tmp_path / "templates/base/passwd").symlink_to("/etc/passwd")
    context = base_context(config)
    assert context.files["passwd"] == Path("/etc/passwd")


def test_links_inside_the_folder_are_followed_and_copied_as_hashed(tmp_path: Path) -> None:
    config = linked_tree(tmp_path)
    (tmp_path / "templates/base/etc").symlink_to("conf")  # a folder
    (tmp_path / "templates/base/main.conf").symlink_to("conf/app.conf")  # a file
    context = base_context(config)
    assert set(context.files) == {"conf/app.conf", "etc/app.conf", "main.conf"}
    digests = context.file_digests()
    assert digests["etc/app.conf"] == digests["main.conf"] == digests["conf/app.conf"]
    out = tmp_path / "out"
    out.mkdir()
    context.write(out / "Dockerfile", out / "context")
    for inner in context.files:
        written = out / "context" / inner
        assert not written.is_symlink() and written.read_text() == "[app]\n"


@pytest.mark.parametrize(("target", "problem"), [
    ("missing.conf", "is a broken link (to missing.conf)"),
    ("loop", "is a broken link (to loop)"),
    (".", "links to a folder that holds it"),
])
def test_dangling_and_looping_links_are_input_errors(tmp_path: Path, target: str,
                                                     problem: str) -> None:
    config = linked_tree(tmp_path)
    (tmp_path / "templates/base/loop").symlink_to(target)
    assert problem in load_error(config, "base")


@pytest.mark.parametrize("source", ["/", ".", "..", "build", "build/base"])
def test_a_files_source_holding_or_inside_build_dir_is_an_input_error(tmp_path: Path,
                                                                      source: str) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    config = linked_tree(tree, f"{{src: {source!r}}}")
    (tree / "build/base").mkdir(parents=True)
    message = load_error(config, "base")
    assert "build_dir" in message and "files: 'src'" in message


@pytest.mark.parametrize(("build_dir", "problem"), [
    ("..", "not a folder inside the tree's folder"),
    (".", "not a folder inside the tree's folder"),
    ("/tmp", "not a folder inside the tree's folder"),
    ("templates", "holds template folder 'templates'"),
    ("templates/..", "not a folder inside the tree's folder"),
])
def test_build_dir_must_be_inside_the_tree_and_hold_none_of_it(tmp_path: Path, build_dir: str,
                                                               problem: str) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    config = linked_tree(tree)
    config.write_text(f"settings: {{build_dir: {build_dir!r}}}\n" + config.read_text())
    with pytest.raises(InputError) as info:
        project.load(config)
    assert problem in str(info.value) and "fix: " in str(info.value)


def test_build_args_no_arg_reads_are_no_part_of_the_key() -> None:
    reads = dockerfile_reading.args_read("FROM scratch\nARG A B=2\nRUN echo $A\n")
    assert [name for name in ("A", "B", "C", "HTTP_PROXY", "no_proxy") if reads(name)] == [
        "A", "B", "HTTP_PROXY", "no_proxy"]


def test_a_build_s_dockerfile_ends_in_a_step_of_its_own() -> None:
    assert dockerfile_reading.as_built("FROM b\nRUN true\n\n", {}) == (
        "FROM b\nRUN true\nARG IMAGEBAKE_END\n")
    two = "FROM b AS one\nRUN \\\n  true\n# two\nFROM b AS two\n"
    assert dockerfile_reading.as_built(two, {}, "one") == (
        "FROM b AS one\nRUN \\\n  true\n# two\nARG IMAGEBAKE_END\nFROM b AS two\n")
    assert dockerfile_reading.as_built(two, {}, "two") == f"{two}ARG IMAGEBAKE_END\n"
    assert dockerfile_reading.as_built("FROM b\n", {"tier": "api", 'q"\\': "$HOME x=y"}) == (
        'FROM b\nLABEL "q\\"\\\\"="\\$HOME x=y" "tier"="api"\n')


# --- target: and contexts: --------------------------------------------------------------------

def test_an_unknown_target_is_one_clear_error_at_load(tmp_path: Path) -> None:
    config = make_tree(tmp_path, "images:\n  base: {target: Tools}\n", {
        "templates/base/Dockerfile.j2": "FROM scratch AS tools\nFROM scratch AS final\n"})
    message = load_error(config, "base")
    assert "images.base.target: the rendered" in message
    assert "no stage named 'Tools' (its stages: tools, final)" in message


@pytest.mark.parametrize(("value", "said"), [
    ("missing", "is no folder"),
    ("https://example.org/ctx.tar", "fetched from the network at build time"),
])
def test_a_bad_named_context_is_one_clear_error_at_load(tmp_path: Path, value: str,
                                                         said: str) -> None:
    config = make_tree(tmp_path, f"images:\n  base: {{contexts: {{extra: '{value}'}}}}\n", {
        "templates/base/Dockerfile.j2": "FROM scratch\nCOPY --from=extra /a /a\n"})
    assert said in load_error(config, "base")


def test_a_root_built_from_a_named_image_context_has_that_image_as_its_base(
        tmp_path: Path) -> None:
    config = make_tree(tmp_path, "images:\n  base: {contexts: {b: 'docker-image://localhost/b:1'}}\n",
                       {"templates/base/Dockerfile.j2": "FROM b\nRUN true\n"})
    assert project.load(config).plans["base"].base == "localhost/b:1"


def test_named_contexts_are_keyed_by_content_and_image(tmp_path: Path) -> None:
    config = make_tree(tmp_path, """\
        images:
          base:
            contexts: {extra: extra, tools: 'docker-image://localhost/tools:1'}
        """, {"templates/base/Dockerfile.j2": "FROM scratch\nCOPY --from=extra /a /a\n"
              "COPY --from=tools /b /b\n", "extra/a": "one\n"})
    plan = project.load(config).plans["base"]
    assert plan.reads == ("localhost/tools:1",)  # (its ID is keyed, as any image read)
    assert plan.contexts == {"extra": str((tmp_path / "extra").resolve()),
                             "tools": "docker-image://localhost/tools:1"}
    before = plan.record_on(None).key
    (tmp_path / "extra" / "a").write_text("two\n")
    assert project.load(config).plans["base"].record_on(None).key != before


def test_a_folder_is_read_again_only_where_a_file_changed(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A named context's or a read-only volume's folder: its files' digests are kept by
    their stat in build_dir, so a run reads only the files that changed."""
    folder = tmp_path / "wheels"
    folder.mkdir()
    (folder / "a.whl").write_bytes(b"a" * 1000)
    (folder / "b.whl").write_bytes(b"b" * 1000)
    stats = tree_files.StatCache(tmp_path / "stat-cache.json")
    first = tree_files.folder_digest(folder, stats)
    assert first == tree_files.folder_digest(folder)  # the same digest as read whole
    assert (tmp_path / "stat-cache.json").exists()

    stats = tree_files.StatCache(tmp_path / "stat-cache.json")  # a later run's
    opened: list[str] = []
    real_open = Path.open
    monkeypatch.setattr(Path, "open", lambda self, *a, **k: opened.append(self.name)
                        or real_open(self, *a, **k))
    assert tree_files.folder_digest(folder, stats) == first and opened == []
    (folder / "b.whl").write_bytes(b"c" * 1000)
    opened.clear()
    assert tree_files.folder_digest(folder, stats) != first
    assert [name for name in opened if name.endswith(".whl")] == ["b.whl"]
