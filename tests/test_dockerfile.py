"""What buildlib.dockerfile answers about a Dockerfile: the images a build reads, the
base a FROM ${ARG} resolves to, the context files and args it reads, ONBUILD triggers,
remote sources. (How it parses is compared with buildah's own parser in
test_dockerfile_parity.py.)"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from buildlib import dockerfile, dockerfile_stages, keys, project, render


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


# What buildah 1.28 built of this Dockerfile with each --target (checked with real buildah
# and `--pull=never`: an image of a stage it skips, missing from storage, failed nothing).
STAGES = ("FROM localhost/unused:1 AS unused\n"
          "FROM localhost/bb:1 AS one\n"
          "COPY --from=localhost/one-reads:1 /x /x\n"
          "FROM localhost/bb:1 AS two\n"
          "COPY --from=localhost/two-reads:1 /x /x\n"
          "FROM localhost/bb:1 AS three\n"
          "RUN --mount=type=bind,from=one,target=/m true\n"
          "FROM localhost/last:1\n")


@pytest.mark.parametrize(("target", "built", "read"), [
    ("three", {1, 3}, ["localhost/bb:1", "localhost/one-reads:1"]),
    ("two", {2}, ["localhost/bb:1", "localhost/two-reads:1"]),
    ("unused", {0}, []),
    (None, {4}, ["localhost/last:1"]),
])
def test_only_the_stages_buildah_builds_are_read(target: str | None, built: set[int],
                                                  read: list[str]) -> None:
    parsed = dockerfile.read(STAGES)
    stages = dockerfile_stages.stages(parsed)
    reads = dockerfile_stages.stage_reads(parsed, stages, {})
    assert dockerfile_stages.built_stages(stages, reads, target) == built
    assert dockerfile.images_read(STAGES, {}, target=target) == read
    assert dockerfile.stage_names(STAGES) == ["unused", "one", "two", "three"]


def test_a_cache_mount_from_a_stage_builds_that_stage() -> None:
    text = ("FROM scratch AS s\nCOPY s /s\nFROM scratch\n"
            "RUN --mount=type=cache,from=s,source=/,target=/m cp /m/s /f\n")
    assert dockerfile.context_read(text)("s")


def test_context_files_mounts_and_missing_sources_of_unbuilt_stages_count_for_nothing(
        tmp_path: Path) -> None:
    text = ("FROM scratch AS docs\nCOPY manual.txt /m\n"
            "RUN --mount=type=cache,target=/c true\n"
            "FROM scratch AS app\nCOPY app.txt /a\n")
    reads = dockerfile.context_read(text, target="app")
    assert reads("app.txt") and not reads("manual.txt")
    assert dockerfile.context_read(text, target="docs")("manual.txt")
    assert dockerfile.cache_blind_reads(text, {}, [], target="app") == []
    assert dockerfile.cache_blind_reads(text, {}, [], target="docs") == [
        "RUN --mount=type=cache,target=/c"]
    context = render.Context("x", text, {"app.txt": tmp_path}, tmp_path, target="app")
    assert context.missing_sources() == []
    assert replace(context, target="docs").missing_sources() == ["COPY 'manual.txt'"]
    # which stage a `--from=$VARIABLE` names is known at build time only: every stage counts
    variable = text.replace("FROM scratch AS app", "FROM scratch AS app\nARG S=docs\n"
                            "COPY --from=${S} /m /m")
    assert dockerfile.context_read(variable, target="app")("manual.txt")


def test_a_named_context_is_no_image_to_pull() -> None:
    text = "FROM localhost/bb:1\nCOPY --from=extra /a /a\nCOPY --from=localhost/x:1 /b /b\n"
    assert dockerfile.images_read(text, {}, contexts={"extra"}) == ["localhost/x:1"]
    assert dockerfile.images_read(text, {}) == ["extra", "localhost/x:1"]


def test_a_record_without_target_or_contexts_keeps_its_key() -> None:
    plain = keys.Record("d", {"a": "1"})
    assert not {"target", "contexts", "volume_contents"} & plain.as_dict().keys()
    staged = keys.Record("d", {"a": "1"}, target="tools")
    named = keys.Record("d", {"a": "1"}, contexts={"extra": "abc"})
    assert len({plain.key, staged.key, named.key}) == 3
    assert keys.changes(plain.as_dict(), staged, "base image 'x'") == (
        "target changed: None -> tools")
    assert keys.changes(named.as_dict(), plain, "base image 'x'") == (
        "build context changed: -extra=abc")


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


def test_what_a_read_only_volume_holds_is_keyed_and_a_writable_ones_is_not(
        tmp_path: Path) -> None:
    """A volume mounted `ro` (or `O`) is an input: an edit of what it holds rebuilds the
    image, and says so. A writable one is a cache the build writes to: keyed by its
    spelling only (else each build would change its own key)."""
    (tmp_path / "templates" / "x").mkdir(parents=True)
    (tmp_path / "templates" / "x" / "Dockerfile.j2").write_text("FROM scratch\n")
    for folder in ("wheels", "overlay", "cache"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "f").write_text("one")
    config = tmp_path / "images.yaml"
    config.write_text("images:\n  x:\n    volumes: [" + ", ".join([
        f"'{tmp_path}/wheels:/w:ro,z'", f"'{tmp_path}/overlay:/o:O'", f"'{tmp_path}/cache:/c'",
        f"'{tmp_path}/gone:/g:ro'"]) + "]\n")

    def record() -> keys.Record:
        return project.load(config).plans["x"].record_on(None)

    first = record()
    assert set(first.volume_contents) == {f"{tmp_path}/{f}" for f in ("wheels", "overlay", "gone")}
    assert first.volume_contents[f"{tmp_path}/gone"] == "absent"
    (tmp_path / "cache" / "f").write_text("written by a build")
    assert record().key == first.key
    (tmp_path / "wheels" / "f").write_text("two")
    edited = record()
    assert edited.key != first.key
    assert keys.changes(first.as_dict(), edited, "base image 'x'").startswith(
        f"volume content changed: -{tmp_path}/wheels=")
    (tmp_path / "overlay" / "new").write_text("")
    assert record().key != edited.key


@pytest.mark.parametrize(("text", "args", "volumes", "blind"), [
    # what buildah 1.28's layer cache compares by content, or does not need to
    ("FROM b\nCOPY s /s\nADD http://h/u /u\nCOPY --from=x:1 /x /x\nRUN cat /s\n",
     {}, [], []),
    ("FROM b\nRUN --mount=type=tmpfs,target=/t touch /t/x\n", {}, [], []),
    ("FROM b\nARG HTTP_PROXY\nRUN echo $HTTP_PROXY > /f\n", {"HTTP_PROXY": "p"}, [], []),
    # what it reuses a step for, whatever the content read
    ("FROM b\nRUN --mount=type=bind,source=s,target=/m cp /m /f\n", {}, [],
     ["RUN --mount=type=bind,source=s,target=/m"]),
    ("FROM b\nRUN --network=none --mount=target=/m,from=x:1 \\\n  cp /m/x /f\n", {}, [],
     ["RUN --mount=target=/m,from=x:1"]),
    ("FROM b\nRUN --mount=type=cache,target=/c true\n"
     "RUN --mount=type=secret,id=k cat /run/secrets/k\n", {}, [],
     ["RUN --mount=type=cache,target=/c", "RUN --mount=type=secret,id=k"]),
    ("FROM b\nRUN cat /v/x\n", {}, ["/srv:/v:ro"], ["volume /srv:/v:ro"]),
    ("FROM b\nRUN echo $http_proxy > /f\n", {"http_proxy": "p", "OTHER": "o"}, [],
     ["build arg http_proxy (no ARG declares it)"]),
    # a build arg read by a step buildah caches by its text before substitution
    ("FROM b\nARG F=a\nARG G\nENV E=${F}-env\nRUN echo $G\nWORKDIR /w$G\n", {"F": "x"}, [],
     ["ENV with build arg F (cached by its text before substitution)",
      "WORKDIR with build arg G (cached by its text before substitution)"]),
    ("FROM b\nARG F=a\nENV E=${F}-env\n", {}, [], []),  # the default is in the text
    ("FROM b\nARG F=a\nRUN echo $F > /f\nENV E=$HOME\n", {"F": "x"}, [], []),
])
def test_cache_blind_reads(text: str, args: dict[str, str], volumes: list[str],
                           blind: list[str]) -> None:
    assert dockerfile.cache_blind_reads(text, args, volumes) == blind


def test_cache_blind_reads_of_the_triggers_buildah_runs_first() -> None:
    triggers = dockerfile.config_triggers(["RUN --mount=type=bind,source=s,target=/m cp /m /f"])
    assert dockerfile.cache_blind_reads("FROM b\nRUN true\n", {}, [], triggers) == [
        "RUN --mount=type=bind,source=s,target=/m"]


PARITY_CASES = Path(__file__).parent / "parity" / "cases"


@pytest.mark.parametrize("text", [
    "FROM localhost/base:1\nRUN true\n",
    "# escape=`\nFROM `\n  localhost/base:1 AS first\nRUN echo `\n  a\n",
    "ARG V=1\n# a comment\nFROM \\\n  # inside the continuation\n  localhost/base:1 \\\n  AS b\n"
    "COPY . /\n",
    "\ufeffFROM --platform=$BUILDPLATFORM localhost/base:1\r\nRUN true\r\n",
    "FROM localhost/base:1\nFROM localhost/base:1 AS again\n",
    *[path.read_text() for path in sorted(PARITY_CASES.iterdir())],
])
def test_a_renamed_first_from_reads_as_the_whole_renamed_file(text: str) -> None:
    """The key reads only the first FROM's lines again when it names the parent by a
    placeholder: what it reads must be what reading the whole renamed file gives."""
    try:
        froms = [i for i in dockerfile.read(text).instructions if i.keyword == "from"]
    except dockerfile.DockerfileError:
        return  # (a case buildah refuses: never keyed)
    if not froms:
        return
    old = froms[0].args[0] if froms[0].args else "scratch"
    renamed, parsed = dockerfile.first_from_renamed(text, old, "{parent}")
    assert "{parent}" in renamed
    assert parsed.canonical() == dockerfile.parse(renamed).canonical()
