"""The stages of a Dockerfile as buildah 1.28 builds them: each FROM resolved with the
ARGs before the first, what each stage reads (other stages, named contexts, images), and
which stages a build runs (buildah skips the ones its target does not read)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from buildlib.dockerfile_parse import Dockerfile, Instruction, process_word


@dataclass
class Stage:
    """One FROM and the instructions after it."""

    image: str  # what its FROM names, resolved (an image, `scratch`, or an earlier stage)
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)


def stages(dockerfile: Dockerfile, build_args: Mapping[str, str] | None = None,
           triggers: tuple[Instruction, ...] = ()) -> list[Stage]:
    """The stages, each FROM resolved as buildah resolves it: with the ARGs before the
    first FROM, whose values `build_args` (--build-arg) override. `triggers` (the
    ONBUILD instructions of the image the first stage is built FROM) run first in it."""
    heading = heading_args(dockerfile, build_args or {})
    found: list[Stage] = []
    for instruction in dockerfile.instructions:
        if instruction.keyword == "from":
            words = instruction.args
            name = words[2] if len(words) == 3 and words[1].lower() == "as" else None
            image = process_word(words[0], heading) if words else ""
            found.append(Stage(image, name, [*triggers] if not found else []))
        elif found:
            found[-1].instructions.append(instruction)
    return found


def heading_args(dockerfile: Dockerfile, build_args: Mapping[str, str]) -> dict[str, str]:
    """The ARGs before the first FROM, as the FROM lines see them: each default (itself
    expanded with the ones before it), or the build arg of that name."""
    values: dict[str, str] = {}
    for instruction in dockerfile.instructions:
        if instruction.keyword == "from":
            break
        if instruction.keyword != "arg":
            continue
        before = dict(values)  # a step sees the args as they were before it
        for word in instruction.args:
            name, has_default, default = process_word(word, before).partition("=")
            if name in build_args:
                values[name] = build_args[name]
            elif has_default:
                values[name] = default
            else:
                values.setdefault(name, "")
    return values


def stage_defaults(stage: Stage) -> dict[str, str]:
    values: dict[str, str] = {}
    for instruction in stage.instructions:
        if instruction.keyword == "arg":
            for word in instruction.args:
                name, has_default, default = word.partition("=")
                if has_default:
                    values[name] = process_word(default, values)
    return values


def mounts(instruction: Instruction) -> list[tuple[str, dict[str, str]]]:
    """(the `--mount=...` flag, its fields) of each mount of a RUN (every type)."""
    if instruction.keyword != "run":
        return []
    return [(flag, dict(f.partition("=")[::2] for f in flag[len("--mount="):].split(",")))
            for flag in instruction.flags if flag.startswith("--mount=")]


def bind_mounts(instruction: Instruction) -> list[dict[str, str]]:
    """The fields of each `RUN --mount=...` of type bind (the default type)."""
    return [fields for _, fields in mounts(instruction)
            if fields.get("type", "bind") == "bind"]


def stage_reads(parsed: Dockerfile, stages: list[Stage],
                 build_args: Mapping[str, str]) -> list[list[str]]:
    """What each stage reads besides the first stage's FROM image: a later stage's FROM,
    each `COPY --from=` and `RUN --mount=...,from=` of any type (a stage, a named context
    or an image), resolved with the build args."""
    heading = heading_args(parsed, build_args)
    found = []
    for index, stage in enumerate(stages):
        # (a wider reading than buildah's: the ARGs before the first FROM count too)
        env = {**heading, **stage_defaults(stage), **build_args}
        named = [stage.image] if index else []  # (a FROM is resolved already)
        for instruction in stage.instructions:
            source = instruction.flag("from") if instruction.keyword == "copy" else None
            sources = [source] if source is not None else []
            sources += [fields["from"] for _, fields in mounts(instruction) if "from" in fields]
            named += [process_word(s, env) for s in sources]
        found.append(named)
    return found


def built_stages(stages: list[Stage], reads: list[list[str]],
                 target: str | None = None) -> set[int]:
    """The stages buildah 1.28 builds (it skips unused stages): the `target` stage (its
    name, as buildah's `--target` matches it; None: the last stage) and every earlier
    stage it reads, by name or number, in its FROM, a `COPY --from=` or a
    `RUN --mount=...,from=`, and what those read in turn."""
    if not stages:
        return set()
    names = {s.name: i for i, s in enumerate(stages) if s.name}
    built: set[int] = set()

    def build(index: int) -> None:
        built.add(index)
        earlier = {str(i): i for i in range(index)} | {
            s.name.lower(): i for i, s in enumerate(stages[:index]) if s.name}
        for name in reads[index]:
            if earlier.get(name.lower(), index) not in built | {index}:
                build(earlier[name.lower()])

    build(len(stages) - 1 if target is None else names[target])
    return built
