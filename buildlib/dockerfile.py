"""A Dockerfile read as buildah 1.28 reads it: the one reader every other module asks.

`dockerfile_parse` turns the text into instructions and reads their words as buildah's
parser does; this module answers the questions the rest of imagebake asks of a
Dockerfile's text: its stages and the images they stand on, what a build reads from its
context, its remote inputs and mounts, the build args it reads.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence

from buildlib.dockerfile_parse import (
    KNOWN,
    Dockerfile,
    DockerfileError,
    Instruction,
    parse,
    process_word,
)
from buildlib.dockerfile_stages import (
    Stage,
    bind_mounts,
    built_stages,
    heading_args,
    mounts,
    stage_defaults,
    stage_reads,
    stages,
)
from buildlib.tree_files import IGNORE_FILES

URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
SCRATCH = "scratch"


# Build args buildah gives RUN steps without an ARG instruction.
PREDEFINED_ARGS = frozenset(name for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY",
                                               "NO_PROXY", "ALL_PROXY")
                            for name in (proxy, proxy.lower()))


def declared_args(text: str) -> frozenset[str]:
    """Every build arg an ARG instruction declares (in any stage or ONBUILD trigger)."""
    return frozenset(word.partition("=")[0] for instruction in with_triggers(
        read(text).instructions) if instruction.keyword == "arg" for word in instruction.args)


def with_triggers(instructions: tuple[Instruction, ...] | list[Instruction]
                   ) -> Iterator[Instruction]:
    for instruction in instructions:
        yield instruction
        if instruction.trigger is not None:
            yield instruction.trigger


def context_sources(instructions: list[Instruction] | tuple[Instruction, ...],
                    variables: bool = False) -> list[tuple[str, str]]:
    """(COPY|ADD, source path inside the context) for each source a build takes from its
    context: not URLs, other stages or images (`--from`), nor `$VARIABLE` paths unless
    `variables` (those are kept as written). Quotes and backslashes go as buildah takes
    them away."""
    found = []
    for instruction in instructions:
        if instruction.keyword not in ("copy", "add") or instruction.flag("from") is not None:
            continue
        for path in instruction.args[:-1]:  # the last is the target
            if "$" in path:
                if variables:
                    found.append((instruction.keyword.upper(), path))
                continue
            path = process_word(path, {})
            if is_remote(path):
                continue
            found.append((instruction.keyword.upper(), _inside_context(path)))
    return found


def is_remote(path: str) -> bool:
    """An ADD source buildah fetches itself: a URL, or a git address."""
    return bool(URL.match(path)) or path.startswith("git@")


def remote_sources(instructions: list[Instruction] | tuple[Instruction, ...],
                   env: Mapping[str, str] | None = None) -> list[str]:
    """What ADD instructions fetch from the network at build time (their variables from
    `env`)."""
    return [path for instruction in instructions if instruction.keyword == "add"
            for path in (_processed(p, env or {}) for p in instruction.args[:-1])
            if is_remote(path)]


def _processed(word: str, env: Mapping[str, str]) -> str:
    """The word as buildah processes it; as written where buildah would fail on it."""
    try:
        return process_word(word, env)
    except DockerfileError:
        return word


def remote_inputs(text: str, build_args: Mapping[str, str]) -> list[str]:
    """What a build of this Dockerfile fetches from the network itself (`ADD <url>`, its
    variables resolved as widely as `images_read` resolves them; ONBUILD triggers too)."""
    parsed = read(text)
    heading = heading_args(parsed, build_args)
    return [path for stage in stages_of(text, build_args) for path in remote_sources(
        list(with_triggers(stage.instructions)),
        {**heading, **stage_defaults(stage), **build_args})]


def run_mounts(text: str) -> list[tuple[str, dict[str, str]]]:
    """`mounts` of every RUN of a Dockerfile (ONBUILD triggers too)."""
    return [mount for instruction in with_triggers(read(text).instructions)
            for mount in mounts(instruction)]


# Mounts whose content buildah 1.28's layer cache looks at: only a tmpfs has none.
CACHE_SEEN_MOUNTS = frozenset({"tmpfs"})


# The steps buildah 1.28's layer cache keys with the build args' values (in its history).
ARGS_IN_HISTORY = frozenset({"run", "from", "arg"})


def cache_blind_reads(text: str, build_args: Mapping[str, str], volumes: Sequence[str],
                      triggers: tuple[Instruction, ...] = (),
                      target: str | None = None) -> list[str]:
    """What a build of this Dockerfile (after the ONBUILD `triggers` of the image it is
    built on) reads that buildah 1.28's layer cache does not look at, one phrase each;
    when any, the image must be built without that cache. buildah reuses a step when its
    parent and its text (with the values of the build args its ARGs declare, for a RUN)
    are the same, so a step that reads anything else took the old bytes under a new key
    (checked with real buildah, each): a RUN's mount (bind, of the context or `from=` a
    stage or an image; cache; secret: any but tmpfs); a `--volume`; a proxy build arg no
    ARG declares (buildah keeps them out of history); a given build arg read by a step
    but RUN (ENV, LABEL, WORKDIR... are cached by their text before substitution, and
    kept the old value). COPY and ADD (of the context, `--from=`, a URL) are compared by
    content. Only the stages buildah builds (for `target`) count."""
    instructions = list(with_triggers(built_instructions(text, build_args, target, triggers)))
    blind = [f"RUN {flag}" for instruction in instructions
             for flag, fields in mounts(instruction)
             if fields.get("type", "bind") not in CACHE_SEEN_MOUNTS]
    blind += [f"volume {volume}" for volume in volumes]
    declared = declared_args(text) | {word.partition("=")[0] for instruction in triggers
                                      if instruction.keyword == "arg"
                                      for word in instruction.args}
    blind += [f"build arg {name} (no ARG declares it)" for name in sorted(build_args)
              if name in PREDEFINED_ARGS and name not in declared]
    given = declared & set(build_args)
    for instruction in instructions if given else []:
        names = sorted(set(re.findall(r"\$\{?(\w+)", instruction.rest)) & declared)
        if names and instruction.keyword not in ARGS_IN_HISTORY:
            blind.append(f"{instruction.keyword.upper()} with build arg {', '.join(names)} "
                         "(cached by its text before substitution)")
    return blind


def bind_mount_sources(instructions: list[Instruction] | tuple[Instruction, ...]) -> list[str]:
    """The context paths `RUN --mount=type=bind,source=...` mounts (no `from=`)."""
    return [_inside_context(fields.get("source") or fields.get("src") or ".")
            for instruction in instructions for fields in bind_mounts(instruction)
            if "from" not in fields]


def _inside_context(path: str) -> str:
    return os.path.normpath(path.lstrip("/")) if path.strip("/") else "."


def stages_of(text: str, build_args: Mapping[str, str] | None = None,
              triggers: tuple[Instruction, ...] = ()) -> list[Stage]:
    """Its `stages` (read them, never change them: they are worked out once for each
    build args and triggers, and a run asks for them several times per image)."""
    return _stages(text, tuple(sorted((build_args or {}).items())), triggers)


@functools.lru_cache(maxsize=1024)
def _stages(text: str, build_args: tuple[tuple[str, str], ...],
            triggers: tuple[Instruction, ...]) -> list[Stage]:
    return stages(read(text), dict(build_args), triggers)


@functools.lru_cache(maxsize=1024)
def read(text: str) -> Dockerfile:
    """`parse`, once per text."""
    return parse(text)


def first_from_renamed(text: str, old: str, new: str) -> tuple[str, Dockerfile]:
    """The text with `old` replaced by `new` (once) in the lines of its first FROM, and
    that text as `read` reads it: only the FROM's lines are read again (a run keys every
    image this way, and a whole Dockerfile is read once)."""
    parsed = read(text)
    index, first = next((i, instruction) for i, instruction in enumerate(parsed.instructions)
                        if instruction.keyword == "from")
    lines = text.splitlines(keepends=True)
    spanned = "".join(lines[first.start - 1:first.end]).replace(old, new, 1)
    lines[first.start - 1:first.end] = [spanned]
    renamed = "".join(lines)
    directive = "" if parsed.escape == "\\" else f"# escape={parsed.escape}\n"
    again = parse(directive + spanned).instructions
    if len(again) != 1:  # (read alone, the lines are not one instruction)
        return renamed, read(renamed)
    instructions = (*parsed.instructions[:index], again[0], *parsed.instructions[index + 1:])
    return renamed, Dockerfile(instructions, parsed.escape)


def first_from(text: str) -> str | None:
    """The image the first FROM names as written, or None if another instruction (but
    ARG) comes first."""
    for instruction in read(text).instructions:
        if instruction.keyword == "arg":
            continue
        if instruction.keyword != "from":
            return None
        return instruction.args[0] if instruction.args else None
    return None


def sources_in(text: str) -> list[tuple[str, str]]:
    """`context_sources` of a Dockerfile's text."""
    return context_sources(read(text).instructions)


def base_image(text: str, build_args: Mapping[str, str]) -> str | None:
    """The image the first FROM names, resolved as buildah resolves it (the ARGs before it,
    `build_args` overriding their defaults); None for `scratch` or no name at all."""
    first = stages_of(text, build_args)[:1]
    image = first[0].image if first else ""
    return None if not image or image.lower() == SCRATCH else image


def images_read(text: str, build_args: Mapping[str, str],
                triggers: tuple[Instruction, ...] = (), target: str | None = None,
                contexts: Collection[str] = ()) -> list[str]:
    """Every image a build reads besides the one its first FROM names: a later stage's
    FROM, `COPY --from=<image>`, `RUN --mount=...,from=<image>` (an earlier stage's name
    or number is no image, nor a named build context of `contexts`); resolved with the
    build args, as buildah resolves them. Only the stages buildah builds count: the
    `target` stage (default: the last) and the stages it reads, as `built_stages` says."""
    every = stages_of(text, build_args, triggers)
    reads = stage_reads(read(text), every, build_args)
    found: list[str] = []
    for index in sorted(built_stages(every, reads, target)):
        earlier = {str(i) for i in range(index)} | {
            s.name.lower() for s in every[:index] if s.name}
        for image in reads[index]:
            if (image and image.lower() not in earlier | {SCRATCH} and image not in contexts
                    and image not in found):
                found.append(image)
    return found


def built_instructions(text: str, build_args: Mapping[str, str] | None = None,
                       target: str | None = None,
                       triggers: tuple[Instruction, ...] = ()) -> list[Instruction]:
    """The instructions of the stages buildah builds (`built_stages`; their FROM lines
    left out), the `triggers` first in the first stage; every instruction when a later
    stage's FROM or a `--from=` is built of a variable (which stage it names may depend on
    a build arg)."""
    parsed = read(text)
    every = stages_of(text, build_args, triggers)
    named = [i for stage in every for i in stage.instructions if i.flag("from") or any(
        "from" in fields for _, fields in mounts(i))]
    named += [i for i in parsed.instructions if i.keyword == "from"][1:]
    if any("$" in i.original for i in named):
        return [instruction for stage in every for instruction in stage.instructions]
    built = built_stages(every, stage_reads(parsed, every, build_args or {}), target)
    return [instruction for index in sorted(built) for instruction in every[index].instructions]


def stage_end(text: str, target: str) -> int | None:
    """The line the `target` stage ends on, when a stage follows it: the line before the
    next FROM (1-based; None when the target is the last stage)."""
    froms = [i for i in read(text).instructions if i.keyword == "from"]
    names = [i.args[2] if len(i.args) == 3 and i.args[1].lower() == "as" else None
             for i in froms]
    index = names.index(target)
    return froms[index + 1].start - 1 if index + 1 < len(froms) else None


def stage_names(text: str) -> list[str]:
    """The names its stages are given (`FROM ... AS name`), which `--target` can name."""
    return [stage.name for stage in stages_of(text) if stage.name]


def context_read(text: str, triggers: tuple[Instruction, ...] = (),
                 target: str | None = None) -> Callable[[str], bool]:
    """Whether a build of this Dockerfile can read a context file (by its path inside the
    context): some COPY/ADD source or `RUN --mount=type=bind` source names it, the file or
    a folder above it, with buildah's wildcards (`*`, `?`, `[...]` within one path part).
    A source built from a variable can name anything; ignore files decide what is sent and
    are always read. `triggers`: ONBUILD instructions of the image it is built on. Only
    the stages buildah builds (for `target`) count."""
    instructions = built_instructions(text, target=target, triggers=triggers)
    patterns = [path for _, path in context_sources(instructions, variables=True)]
    patterns += bind_mount_sources(instructions)
    if any("$" in p or p == "." for p in patterns):
        return lambda inner: True
    exact = {p for p in patterns if not is_glob(p)}
    globs = [_glob(p) for p in patterns if is_glob(p)]

    def reads(inner: str) -> bool:
        if inner in IGNORE_FILES:
            return True
        parts = inner.split("/")
        above = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        return any(a in exact for a in above) or any(
            g.fullmatch(a) for g in globs for a in above)

    return reads


def args_read(text: str) -> Callable[[str], bool]:
    """Whether a build of this Dockerfile can read a build arg: one an ARG instruction
    declares, or one buildah gives every RUN step (the proxies). Any other is "not
    consumed" (buildah says so) and changes no byte of the image."""
    return (declared_args(text) | PREDEFINED_ARGS).__contains__


def onbuild_triggers(text: str) -> tuple[Instruction, ...]:
    """The ONBUILD instructions of the last stage, which an image built FROM this one runs
    first (when its format keeps them)."""
    last = stages_of(text)[-1:]
    return tuple(i.trigger for i in (last[0].instructions if last else [])
                 if i.keyword == "onbuild" and i.trigger is not None)


def config_triggers(lines: list[str]) -> tuple[Instruction, ...]:
    """The ONBUILD instructions an image's config holds, read as buildah reads them."""
    return read("\n".join(lines)).instructions


def unknown_instructions(text: str) -> list[Instruction]:
    """Instructions buildah 1.28 fails on when it reaches them (a here-document's lines
    among them: buildah 1.28 reads none)."""
    return [i for i in with_triggers(read(text).instructions) if i.keyword not in KNOWN]


def is_glob(path: str) -> bool:
    return any(c in path for c in "*?[")


def _glob(pattern: str) -> re.Pattern[str]:
    """A path wildcard as Go's filepath.Match reads it: no wildcard crosses a `/`."""
    parts = re.split(r"(\*|\?|\[[^\]]*\])", pattern)
    return re.compile("".join(
        "[^/]*" if part == "*" else "[^/]" if part == "?" else
        part if part.startswith("[") and part.endswith("]") and len(part) > 2
        else re.escape(part) for part in parts))


# The last step of a Dockerfile as built when the image has no labels (see `as_built`).
LAST_STEP = "ARG IMAGEBAKE_END"


def as_built(text: str, labels: Mapping[str, str], target: str | None = None) -> str:
    """The Dockerfile a build writes: the rendered one, then a last step of its own: the
    image's labels, spelled as buildah records `--label k=v` (`LABEL "k"="v"`; `\\`, `"`
    and `$` escaped by a backslash, which buildah 1.28's LABEL reads under any
    `# escape=`), or without labels LAST_STEP. Two ways buildah 1.28's layer cache gave
    the same files under another image ID than a clean build's, as each step's history
    names the image it started from (`FROM <name or ID>`):
    - `--label`s are written into every intermediate image, so a step taken from a build
      with other labels named another image;
    - the image a build ends in is tagged (its key name), and a later build whose
      Dockerfile goes on after those steps started its next step from it, named so. A
      last step of its own keeps every step of the user's Dockerfile an untagged one.
    With a `target` stage, the step ends that stage (before the next FROM), the one built."""
    if labels:
        last = "LABEL " + " ".join(f"{_quoted(k)}={_quoted(v)}"
                                   for k, v in sorted(labels.items()))
    else:
        last = LAST_STEP
    after = stage_end(text, target) if target else None
    if after is not None:
        lines = text.splitlines(keepends=True)
        return "".join([*lines[:after], f"{last}\n", *lines[after:]])
    return f"{text.rstrip(chr(10))}\n{last}\n"


def _quoted(word: str) -> str:
    escaped = "".join(f"\\{c}" if c in '\\"$' else c for c in word)
    return f'"{escaped}"'
