"""A Dockerfile read as buildah 1.28 reads it: the one reader every other module asks.

buildah 1.28 parses with openshift/imagebuilder 1.2.3's parser (a fork of Docker's from
before BuildKit), and this module follows that code line by line: the `# escape=` parser
directive (backslash or backtick; `# syntax=` is no directive there, and ends the
directives like any comment), continuations under the escape character, comment lines
dropped even inside a continuation, JSON or shell form per instruction, and no
here-documents (`<<EOF` is a word, and the lines after it are instructions). The
maintained Python parsers read today's BuildKit syntax instead (here-documents, `# syntax`
as a directive), which is not what buildah 1.28 builds; tests/test_dockerfile_parity.py
compares this reader with buildah's own Go parser on every rendered Kolla Dockerfile.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

TOKEN_WHITESPACE = re.compile(r"[\t\v\f\r ]+")
ESCAPE_DIRECTIVE = re.compile(r"^#[ \t]*escape[ \t]*=[ \t]*(.).*$")
URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
SCRATCH = "scratch"


class DockerfileError(ValueError):
    """A Dockerfile buildah 1.28 refuses, or one this tool cannot key soundly."""


@dataclass(frozen=True)
class Instruction:
    """One instruction as buildah's parser gives it: the keyword in lower case, the
    `--flags` before the arguments, the arguments, and whether they were a JSON array."""

    keyword: str
    flags: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    json: bool = False
    start: int = 0  # the lines it spans in the file (1-based; 0 in an ONBUILD trigger)
    end: int = 0
    original: str = ""
    trigger: Instruction | None = None  # ONBUILD's instruction

    def flag(self, name: str) -> str | None:
        """The value of `--name=value` (the last one given), or None."""
        found = None
        for flag in self.flags:
            if flag.startswith(f"--{name}="):
                found = flag[len(name) + 3:]
        return found

    @property
    def rest(self) -> str:
        """The instruction's text after its keyword, its lines joined as buildah joins
        them (flags included)."""
        parts = TOKEN_WHITESPACE.split(_strip(self.original), maxsplit=1)
        return parts[1] if len(parts) == 2 else ""

    def as_tuple(self) -> tuple:
        return (self.keyword, list(self.flags), list(self.args), self.json,
                self.trigger.as_tuple() if self.trigger else None)


@dataclass(frozen=True)
class Dockerfile:
    """The instructions of one Dockerfile and its escape character."""

    instructions: tuple[Instruction, ...]
    escape: str = "\\"

    def canonical(self) -> str:
        """What buildah reads, spelled one way: comments, blank lines and how lines were
        continued are no part of it."""
        return json.dumps([self.escape, [i.as_tuple() for i in self.instructions]],
                          separators=(",", ":"))

    def stages(self, build_args: Mapping[str, str] | None = None,
               triggers: tuple[Instruction, ...] = ()) -> list[Stage]:
        """The stages, each FROM resolved as buildah resolves it: with the ARGs before the
        first FROM, whose values `build_args` (--build-arg) override. `triggers` (the
        ONBUILD instructions of the image the first stage is built FROM) run first in it."""
        heading = heading_args(self, build_args or {})
        found: list[Stage] = []
        for instruction in self.instructions:
            if instruction.keyword == "from":
                words = instruction.args
                name = words[2] if len(words) == 3 and words[1].lower() == "as" else None
                image = process_word(words[0], heading) if words else ""
                found.append(Stage(image, name, [*triggers] if not found else []))
            elif found:
                found[-1].instructions.append(instruction)
        return found


@dataclass
class Stage:
    """One FROM and the instructions after it."""

    image: str  # what its FROM names, resolved (an image, `scratch`, or an earlier stage)
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)


# -- parsing, after imagebuilder/dockerfile/parser ----------------------------------------

def _go_space(char: str) -> bool:
    return char.isspace() and char not in "\x1c\x1d\x1e\x1f"


def _lstrip(text: str) -> str:
    index = 0
    while index < len(text) and _go_space(text[index]):
        index += 1
    return text[index:]


def _strip(text: str) -> str:
    end = len(text)
    while end and _go_space(text[end - 1]):
        end -= 1
    return _lstrip(text[:end])


class _Directives:
    def __init__(self) -> None:
        self.escape = "\\"
        self.continuation = re.compile(r"\\[ \t]*\Z")
        self.complete = False
        self.escape_seen = False

    def look_at(self, line: str) -> None:
        """A parser directive, while only directives came before."""
        if self.complete:
            return
        match = ESCAPE_DIRECTIVE.match(line.lower())
        if match:
            if self.escape_seen:
                raise DockerfileError("only one escape parser directive can be used")
            self.escape_seen = True
            if match.group(1) not in "`\\":
                raise DockerfileError(f"invalid ESCAPE '{match.group(1)}'. Must be ` or \\")
            self.escape = match.group(1)
            self.continuation = re.compile(re.escape(self.escape) + r"[ \t]*\Z")
            return
        self.complete = True

    def process(self, line: str, strip_left: bool) -> str:
        if strip_left:
            line = _lstrip(line)
        self.look_at(line)
        return "" if line.startswith("#") else line

    def trim_continuation(self, line: str) -> tuple[str, bool]:
        if self.continuation.search(line):
            return self.continuation.sub("", line), False
        return line, True


def _lines(text: str) -> list[str]:
    """The lines as Go's bufio.Scanner gives them: split at \\n, one \\r dropped."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def parse(text: str) -> Dockerfile:
    """Read a Dockerfile as buildah 1.28 does; a DockerfileError where it refuses."""
    directives = _Directives()
    lines = _lines(text.removeprefix("\ufeff"))
    instructions, index = [], 0
    while index < len(lines):
        line = directives.process(lines[index], strip_left=True)
        index += 1
        start = index
        line, ended = directives.trim_continuation(line)
        if ended and line == "":
            continue
        while not ended and index < len(lines):
            more = directives.process(lines[index], strip_left=False)
            index += 1
            if _lstrip(more).startswith("#") or not _lstrip(more):
                continue  # an empty or comment line inside a continuation
            more, ended = directives.trim_continuation(more)
            line += more
        instructions.append(_instruction(line, directives.escape, start, index))
    return Dockerfile(tuple(instructions), directives.escape)


def _instruction(line: str, escape: str, start: int = 0, end: int = 0) -> Instruction:
    parts = TOKEN_WHITESPACE.split(_strip(line), maxsplit=1)
    keyword = parts[0].lower()
    rest, flags = _builder_flags(parts[1]) if len(parts) == 2 else ("", [])
    rest = _strip(rest)
    if keyword == "onbuild":
        trigger = _instruction(rest, escape) if rest else None
        return Instruction(keyword, tuple(flags), (), False, start, end, line, trigger)
    read = PARSERS.get(keyword, _ignored)
    args, is_json = read(rest, escape)
    return Instruction(keyword, tuple(flags), tuple(args), is_json, start, end, line)


def _builder_flags(line: str) -> tuple[str, list[str]]:
    """The `--flag` words before the arguments (quotes and backslashes as buildah reads
    them there), and the rest of the line."""
    words: list[str] = []
    pos, length = 0, len(line)
    while True:
        while pos < length and _go_space(line[pos]):
            pos += 1
        if pos == length:
            return "", words
        if not line.startswith("--", pos):
            return line[pos:], words
        word, blank_ok, quote = "", False, ""
        while pos < length:
            char = line[pos]
            if quote:
                if char == quote:
                    quote = ""
                elif char == "\\" and pos + 1 < length:
                    pos += 1
                    word += line[pos]
                elif char != "\\":
                    word += char
                else:
                    quote = ""
            elif _go_space(char):
                break
            elif char in "'\"":
                quote, blank_ok = char, True
            elif char == "\\":
                if pos + 1 < length:
                    pos += 1
                    word += line[pos]
            else:
                word += char
            pos += 1
        if pos < length and word == "--":
            return line[pos:], words
        if pos == length and word == "--":
            return "", words
        if blank_ok or word:
            words.append(word)


def _json_array(rest: str) -> tuple[list[str] | None, bool]:
    """The strings of a JSON array at the start of `rest` (what follows it is ignored, as
    Go's decoder does), or None when it is no JSON array."""
    rest = _lstrip(rest)
    if not rest.startswith("["):
        return None, False

    def refuse(constant: str) -> None:
        raise ValueError(constant)

    try:
        value, _ = json.JSONDecoder(parse_constant=refuse).raw_decode(rest)
    except ValueError:
        return None, False
    if value is None:
        return [], True  # `null` decodes as an empty array in Go
    if not isinstance(value, list):
        return None, False
    if not all(isinstance(item, str) for item in value):
        raise DockerfileError("when using JSON array syntax, arrays must be comprised of "
                              "strings only")
    return value, True


def _maybe_json(rest: str, escape: str) -> tuple[list[str], bool]:
    if rest == "":
        return [], False
    words, is_json = _json_array(rest)
    return (words, True) if is_json and words is not None else ([rest], False)


def _maybe_json_list(rest: str, escape: str) -> tuple[list[str], bool]:
    words, is_json = _json_array(rest)
    if is_json and words is not None:
        return words, True
    return _whitespace_words(rest, escape)


def _whitespace_words(rest: str, escape: str) -> tuple[list[str], bool]:
    return (TOKEN_WHITESPACE.split(rest) if rest else []), False


def _string(rest: str, escape: str) -> tuple[list[str], bool]:
    return ([rest] if rest else []), False


def _ignored(rest: str, escape: str) -> tuple[list[str], bool]:
    return [""], False  # an unknown instruction: buildah fails when it reaches it


def _name_or_name_value(rest: str, escape: str) -> tuple[list[str], bool]:
    return parse_words(rest, escape), False


def _name_value(rest: str, escape: str) -> tuple[list[str], bool]:
    """ENV and LABEL: `KEY value` or `KEY=value ...`, as name, value, name, value..."""
    words = parse_words(rest, escape)
    if not words:
        return [], False
    if "=" not in words[0]:
        parts = TOKEN_WHITESPACE.split(rest, maxsplit=1)
        if len(parts) < 2:
            raise DockerfileError(f"{rest!r} must have two arguments")
        return parts, False
    found = []
    for word in words:
        if "=" not in word:
            raise DockerfileError(f"Syntax error - can't find = in {word!r}. Must be of the "
                                  "form: name=value")
        found += word.split("=", 1)
    return found, False


def _health(rest: str, escape: str) -> tuple[list[str], bool]:
    sep = 0
    while sep < len(rest) and not _go_space(rest[sep]):
        sep += 1
    if sep == 0:
        return [], False
    following = _lstrip(rest[sep:])
    words, is_json = _maybe_json(following, escape)
    return [rest[:sep], *words], is_json


def parse_words(rest: str, escape: str) -> list[str]:
    """Space-separated words, quotes kept (they go when the word is processed)."""
    words: list[str] = []
    word, quote, blank_ok, phase = "", "", False, "spaces"
    pos, length = 0, len(rest)
    while pos <= length:
        char = rest[pos] if pos < length else ""
        if phase == "spaces":
            if pos == length:
                break
            if _go_space(char):
                pos += 1
                continue
            phase = "word"
        if pos == length:
            if blank_ok or word:
                words.append(word)
            break
        if phase == "word":
            if _go_space(char):
                if blank_ok or word:
                    words.append(word)
                word, blank_ok, phase = "", False, "spaces"
                pos += 1
                continue
            if char in "'\"":
                quote, blank_ok, phase = char, True, "quote"
        elif char == quote:
            phase = "word"
        if char == escape and (phase == "word" or quote != "'"):
            if pos + 1 == length:
                phase = "word"
                pos += 1
                continue  # an escape character at the end is dropped
            word += char
            pos += 1
            char = rest[pos]
        word += char
        pos += 1
    return words


PARSERS = {
    "add": _maybe_json_list, "arg": _name_or_name_value, "cmd": _maybe_json,
    "copy": _maybe_json_list, "entrypoint": _maybe_json, "env": _name_value,
    "expose": _whitespace_words, "from": _whitespace_words, "healthcheck": _health,
    "label": _name_value, "maintainer": _string, "run": _maybe_json, "shell": _maybe_json,
    "stopsignal": _string, "user": _string, "volume": _maybe_json_list, "workdir": _string,
}
KNOWN = frozenset(PARSERS) | {"onbuild"}


# -- words and variables, after imagebuilder's shell_parser.go -----------------------------

def process_word(word: str, env: Mapping[str, str]) -> str:
    """A word with its quotes and backslashes taken away and `$VAR`, `${VAR}`,
    `${VAR:-default}`, `${VAR:+alternative}` replaced from `env` (unset: empty)."""
    value, end = _process(word, 0, env, stop="")
    return value


def _process(word: str, pos: int, env: Mapping[str, str], stop: str) -> tuple[str, int]:
    result = ""
    while pos < len(word):
        char = word[pos]
        if stop and char == stop:
            return result, pos + 1
        if char == "'":
            end = word.find("'", pos + 1)
            if end < 0:
                raise DockerfileError("unexpected end of statement while looking for "
                                      "matching single-quote")
            result, pos = result + word[pos + 1:end], end + 1
        elif char == '"':
            text, pos = _double_quoted(word, pos + 1, env)
            result += text
        elif char == "$":
            text, pos = _dollar(word, pos + 1, env)
            result += text
        elif char == "\\":
            if pos + 1 == len(word):
                break
            result, pos = result + word[pos + 1], pos + 2
        else:
            result, pos = result + char, pos + 1
    if stop:
        raise DockerfileError(f"unexpected end of statement while looking for matching {stop}")
    return result, pos


def _double_quoted(word: str, pos: int, env: Mapping[str, str]) -> tuple[str, int]:
    result = ""
    while True:
        if pos >= len(word):
            raise DockerfileError("unexpected end of statement while looking for matching "
                                  "double-quote")
        char = word[pos]
        if char == '"':
            return result, pos + 1
        if char == "$":
            text, pos = _dollar(word, pos + 1, env)
            result += text
            continue
        pos += 1
        if char == "\\":
            if pos >= len(word):
                continue
            if word[pos] in '"$\\':
                char, pos = word[pos], pos + 1
        result += char


def _dollar(word: str, pos: int, env: Mapping[str, str]) -> tuple[str, int]:
    if pos < len(word) and word[pos] == "{":
        name, pos = _name(word, pos + 1)
        if pos < len(word) and word[pos] == "}":
            return env.get(name, ""), pos + 1
        if pos < len(word) and word[pos] == ":":
            modifier = word[pos + 1] if pos + 1 < len(word) else ""
            alternative, pos = _process(word, pos + 2, env, stop="}")
            value = env.get(name, "")
            if modifier == "+":
                return (alternative if value else value), pos
            if modifier == "-":
                return (value or alternative), pos
            raise DockerfileError(f"Unsupported modifier ({modifier}) in substitution: {word}")
        raise DockerfileError(f"Missing ':' in substitution: {word}")
    name, pos = _name(word, pos)
    return (env.get(name, "") if name else "$"), pos


def _name(word: str, pos: int) -> tuple[str, int]:
    if pos < len(word) and word[pos].isdigit():
        return word[pos], pos + 1
    start = pos
    while pos < len(word) and (word[pos].isalnum() or word[pos] == "_"):
        pos += 1
    return word[start:pos], pos


# -- what a build reads --------------------------------------------------------------------

# Build args buildah gives RUN steps without an ARG instruction.
PREDEFINED_ARGS = frozenset(name for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY",
                                               "NO_PROXY", "ALL_PROXY")
                            for name in (proxy, proxy.lower()))


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
    return [path for stage in parsed.stages(build_args) for path in remote_sources(
        list(with_triggers(stage.instructions)),
        {**heading, **_stage_defaults(stage), **build_args})]


def mounts(instruction: Instruction) -> list[tuple[str, dict[str, str]]]:
    """(the `--mount=...` flag, its fields) of each mount of a RUN (every type)."""
    if instruction.keyword != "run":
        return []
    return [(flag, dict(f.partition("=")[::2] for f in flag[len("--mount="):].split(",")))
            for flag in instruction.flags if flag.startswith("--mount=")]


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


def bind_mounts(instruction: Instruction) -> list[dict[str, str]]:
    """The fields of each `RUN --mount=...` of type bind (the default type)."""
    return [fields for _, fields in mounts(instruction)
            if fields.get("type", "bind") == "bind"]


def bind_mount_sources(instructions: list[Instruction] | tuple[Instruction, ...]) -> list[str]:
    """The context paths `RUN --mount=type=bind,source=...` mounts (no `from=`)."""
    return [_inside_context(fields.get("source") or fields.get("src") or ".")
            for instruction in instructions for fields in bind_mounts(instruction)
            if "from" not in fields]


def _inside_context(path: str) -> str:
    return os.path.normpath(path.lstrip("/")) if path.strip("/") else "."


# -- the questions the rest of imagebake asks, of a Dockerfile's text ----------------------

@functools.lru_cache(maxsize=1024)
def read(text: str) -> Dockerfile:
    """`parse`, once per text."""
    return parse(text)


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
    stages = read(text).stages(build_args)
    image = stages[0].image if stages else ""
    return None if not image or image.lower() == SCRATCH else image


def images_read(text: str, build_args: Mapping[str, str],
                triggers: tuple[Instruction, ...] = (), target: str | None = None,
                contexts: Collection[str] = ()) -> list[str]:
    """Every image a build reads besides the one its first FROM names: a later stage's
    FROM, `COPY --from=<image>`, `RUN --mount=...,from=<image>` (an earlier stage's name
    or number is no image, nor a named build context of `contexts`); resolved with the
    build args, as buildah resolves them. Only the stages buildah builds count: the
    `target` stage (default: the last) and the stages it reads, as `built_stages` says."""
    stages = read(text).stages(build_args, triggers)
    reads = _stage_reads(read(text), stages, build_args)
    found: list[str] = []
    for index in sorted(built_stages(stages, reads, target)):
        earlier = {str(i) for i in range(index)} | {
            s.name.lower() for s in stages[:index] if s.name}
        for image in reads[index]:
            if (image and image.lower() not in earlier | {SCRATCH} and image not in contexts
                    and image not in found):
                found.append(image)
    return found


def _stage_reads(parsed: Dockerfile, stages: list[Stage],
                 build_args: Mapping[str, str]) -> list[list[str]]:
    """What each stage reads besides the first stage's FROM image: a later stage's FROM,
    each `COPY --from=` and `RUN --mount=...,from=` of any type (a stage, a named context
    or an image), resolved with the build args."""
    heading = heading_args(parsed, build_args)
    found = []
    for index, stage in enumerate(stages):
        # (a wider reading than buildah's: the ARGs before the first FROM count too)
        env = {**heading, **_stage_defaults(stage), **build_args}
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


def built_instructions(text: str, build_args: Mapping[str, str] | None = None,
                       target: str | None = None,
                       triggers: tuple[Instruction, ...] = ()) -> list[Instruction]:
    """The instructions of the stages buildah builds (`built_stages`; their FROM lines
    left out), the `triggers` first in the first stage; every instruction when a later
    stage's FROM or a `--from=` is built of a variable (which stage it names may depend on
    a build arg)."""
    parsed = read(text)
    stages = parsed.stages(build_args or {}, triggers)
    named = [i for stage in stages for i in stage.instructions if i.flag("from") or any(
        "from" in fields for _, fields in mounts(i))]
    named += [i for i in parsed.instructions if i.keyword == "from"][1:]
    if any("$" in i.original for i in named):
        return [instruction for stage in stages for instruction in stage.instructions]
    built = built_stages(stages, _stage_reads(parsed, stages, build_args or {}), target)
    return [instruction for index in sorted(built) for instruction in stages[index].instructions]


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
    return [stage.name for stage in read(text).stages() if stage.name]


def _stage_defaults(stage: Stage) -> dict[str, str]:
    values: dict[str, str] = {}
    for instruction in stage.instructions:
        if instruction.keyword == "arg":
            for word in instruction.args:
                name, has_default, default = word.partition("=")
                if has_default:
                    values[name] = process_word(default, values)
    return values


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
    stages = read(text).stages()
    return tuple(i.trigger for i in (stages[-1].instructions if stages else [])
                 if i.keyword == "onbuild" and i.trigger is not None)


def config_triggers(lines: list[str]) -> tuple[Instruction, ...]:
    """The ONBUILD instructions an image's config holds, read as buildah reads them."""
    return read("\n".join(lines)).instructions


def unknown_instructions(text: str) -> list[Instruction]:
    """Instructions buildah 1.28 fails on when it reaches them (a here-document's lines
    among them: buildah 1.28 reads none)."""
    return [i for i in with_triggers(read(text).instructions) if i.keyword not in KNOWN]


IGNORE_FILES = {".dockerignore", ".containerignore"}


def is_glob(path: str) -> bool:
    return any(c in path for c in "*?[")


def _glob(pattern: str) -> re.Pattern[str]:
    """A path wildcard as Go's filepath.Match reads it: no wildcard crosses a `/`."""
    parts = re.split(r"(\*|\?|\[[^\]]*\])", pattern)
    return re.compile("".join(
        "[^/]*" if part == "*" else "[^/]" if part == "?" else
        part if part.startswith("[") and part.endswith("]") and len(part) > 2
        else re.escape(part) for part in parts))
