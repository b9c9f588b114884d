"""A Dockerfile's text as instructions, parsed as buildah 1.28 parses it.

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

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

TOKEN_WHITESPACE = re.compile(r"[\t\v\f\r ]+")


ESCAPE_DIRECTIVE = re.compile(r"^#[ \t]*escape[ \t]*=[ \t]*(.).*$")


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
