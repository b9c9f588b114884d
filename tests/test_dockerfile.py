"""What buildlib.dockerfile answers about a Dockerfile: the images a build reads, the
base a FROM ${ARG} resolves to, the context files and args it reads, ONBUILD triggers,
remote sources. (How it parses is compared with buildah's own parser in
test_dockerfile_parity.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from buildlib import dockerfile, keys, project


def test_images_read_besides_the_first_from() -> None:
    text = ("ARG EXT=localhost/ext:1\n"
            "FROM scratch AS first\n"
            "FROM localhost/stage:1 AS x\n"
            "FROM first\n"
            "COPY --from=x /a /a\n"
            "COPY --from=0 /b /b\n"
            "COPY --from=${EXT} /c /c\n"
            "COPY --from=localhost/other:2 /d /d\n"
            "RUN --mount=type=bind,from=localhost/mounted:3,source=/e,target=/m true\n"
            "RUN --mount=type=bind,from=x,source=/e,target=/m true\n"
            "RUN --mount=type=cache,target=/c true\n")
    assert dockerfile.images_read(text, {}) == [
        "localhost/stage:1", "localhost/ext:1", "localhost/other:2", "localhost/mounted:3"]
    assert "localhost/new:9" in dockerfile.images_read(text, {"EXT": "localhost/new:9"})
    assert dockerfile.images_read("FROM localhost/base:1\nRUN true\n", {}) == []


@pytest.mark.parametrize(("text", "args", "expected"), [
    ("ARG BASE=localhost/defbase:1\nFROM ${BASE}\n", {}, "localhost/defbase:1"),
    ("ARG BASE=localhost/defbase:1\nFROM ${BASE}\n", {"BASE": "localhost/realbase:1"},
     "localhost/realbase:1"),
    ("ARG TAG=1\nARG REPO=localhost/b\nFROM $REPO:${TAG}\n", {"TAG": "2"}, "localhost/b:2"),
    ("ARG A=x B=${A}\nFROM localhost/${B:-unset}\n", {}, "localhost/unset"),
    ("FROM ${NOT_DECLARED:-localhost/d:1}\n", {"NOT_DECLARED": "ignored"}, "localhost/d:1"),
    ("FROM scratch\n", {}, None),
    ("ARG B\nFROM ${B}\n", {}, None),
])
def test_base_image_resolved_as_buildah_resolves_it(text: str, args: dict[str, str],
                                                    expected: str | None) -> None:
    assert dockerfile.base_image(text, args) == expected


def test_a_backtick_escape_keeps_the_next_copy_an_instruction() -> None:
    text = "# escape=`\nFROM scratch\nRUN echo \\\nCOPY secret /secret\n"
    reads = dockerfile.context_read(text)
    assert reads("secret")
    assert not dockerfile.context_read(text.replace("# escape=`\n", ""))("secret")
    # `# syntax=` first: no directive to buildah 1.28, so the escape that follows is a comment
    assert not dockerfile.context_read("# syntax=x\n" + text)("secret")


def test_onbuild_triggers_are_read_as_the_childs_first_instructions() -> None:
    parent = "FROM scratch AS a\nONBUILD COPY not-this /x\nFROM scratch\nONBUILD COPY secret /s\n"
    triggers = dockerfile.onbuild_triggers(parent)
    assert [t.original for t in triggers] == ["COPY secret /s"]
    assert dockerfile.context_read("FROM p\n", triggers)("secret")
    assert not dockerfile.context_read("FROM p\n")("secret")
    from_config = dockerfile.config_triggers(["COPY a /a", "RUN --mount=type=bind,source=b,"
                                              "target=/b true"])
    reads = dockerfile.context_read("FROM p\n", from_config)
    assert reads("a") and reads("b") and not reads("c")


def test_remote_sources() -> None:
    text = ("FROM scratch\nADD http://h/u /u\nADD [\"https://h/v\", \"/v\"]\n"
            "ADD git@github.com:o/r.git /r\nCOPY http-not-a-url /x\nADD local.tar /\n")
    assert dockerfile.remote_sources(dockerfile.parse(text).instructions) == [
        "http://h/u", "https://h/v", "git@github.com:o/r.git"]


def test_here_documents_are_lines_buildah_fails_on() -> None:
    text = "FROM scratch\nRUN <<EOF\necho hi\nEOF\n"
    assert [i.keyword for i in dockerfile.unknown_instructions(text)] == ["echo", "eof"]
    assert dockerfile.context_read("FROM scratch\nCOPY <<EOF /f\n")("<<EOF")


def test_status_names_each_image_read() -> None:
    old = keys.Record("d", {}, images={"localhost/ext:1": "sha256:a", "localhost/gone:1": "x"})
    new = keys.Record("d", {}, images={"localhost/ext:1": "sha256:b", "localhost/new:1": "y"})
    assert keys.changes(old.as_dict(), new, "base image 'b'") == (
        "image 'localhost/ext:1' changed: sha256:a -> sha256:b; "
        "image 'localhost/gone:1' no longer read: x -> None; "
        "image 'localhost/new:1' now read: None -> y")


def test_remote_inputs_resolve_variables_as_widely_as_buildah_could() -> None:
    text = "ARG U=http://h/u\nFROM scratch\nARG V=git@h:o/r\nADD ${U} /u\nADD $V /v\nADD $W /w\n"
    assert dockerfile.remote_inputs(text, {}) == ["http://h/u", "git@h:o/r"]
    assert dockerfile.remote_inputs(text, {"W": "https://h/w"})[-1] == "https://h/w"
    assert dockerfile.remote_inputs("FROM scratch\nADD ${X:?bad} /x\n", {}) == []


def test_mounts_declared_args_and_the_text_of_an_instruction() -> None:
    text = ("FROM scratch\nARG A B=2\nRUN --network=none --mount=type=cache,target=/c \\\n"
            "    --mount=type=bind,source=s,target=/s true\nONBUILD ARG C\n")
    assert dockerfile.run_mounts(text) == [
        ("--mount=type=cache,target=/c", {"type": "cache", "target": "/c"}),
        ("--mount=type=bind,source=s,target=/s", {"type": "bind", "source": "s",
                                                 "target": "/s"})]
    assert dockerfile.declared_args(text) == {"A", "B", "C"}
    run = dockerfile.read(text).instructions[2]
    assert run.rest == ("--network=none --mount=type=cache,target=/c     "
                        "--mount=type=bind,source=s,target=/s true")


@pytest.mark.parametrize(("fmt", "keyed"), [("docker", True), ("oci", False)])
def test_a_parents_onbuild_triggers_are_keyed_where_the_format_keeps_them(
        tmp_path: Path, fmt: str, keyed: bool) -> None:
    """buildah 1.28 drops ONBUILD from an OCI image ("ONBUILD is not supported for OCI
    image format ... will be ignored"): only a docker-format parent runs them in its child."""
    for name, text in {"parent": "FROM scratch\nONBUILD COPY secret /secret\n",
                       "child": "FROM {{ parent_image }}\n"}.items():
        (tmp_path / "templates" / name).mkdir(parents=True)
        (tmp_path / "templates" / name / "Dockerfile.j2").write_text(text)
    (tmp_path / "templates/child/secret").write_text("one\n")
    config = tmp_path / "images.yaml"
    config.write_text(f"settings: {{format: {fmt}}}\nimages:\n  parent: {{}}\n"
                      "  child: {parent: parent}\n")
    assert ("secret" in project.load(config).plans["child"].sources.files) is keyed
