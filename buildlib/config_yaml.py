"""images.yaml and the files merged on top of it, read as YAML with where each value was
given (`Spots`: file and line), merged as one tree as bake merges an override file, then each
`--set PATH=VALUE` applied; the tree keeps each value's origin (`Origins`) for errors to name.
"""

from __future__ import annotations

import copy
import fnmatch
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from buildlib.errors import InputError

if TYPE_CHECKING:
    import yaml

# Where a value was given: its file and `line N`, or images.yaml and the `--set` that set it.
Spot = tuple[Path, str]
Spots = dict[tuple, Spot]


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as err:
        raise InputError(path, f"cannot read the image list: {err.strerror}",
                         fix="create it, or name another with `config=PATH` "
                         "(`imagebake -c PATH`)") from None


def read_yaml(path: Path, text: str, *, first: bool = True) -> tuple[Any, Spots]:
    """The file's data and where each value of it is; a file merged on top of the first
    may be empty (it adds nothing)."""
    import yaml

    try:
        data, spots = _parse_yaml_spots(path, text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise InputError(path, f"malformed YAML{where}: {problem}",
                         fix="correct the YAML syntax there") from None
    if data is None and not first:
        return {}, spots
    if not isinstance(data, dict):
        raise InputError(path, "the top level must be a mapping with an `images:` key",
                         fix="declare your images under `images:`")
    return data, spots


def parse_yaml(path: Path, text: str) -> Any:
    return _parse_yaml_spots(path, text)[0]


def _parse_yaml_spots(path: Path, text: str) -> tuple[Any, Spots]:
    """Parse once (with libyaml when PyYAML has it: 10x faster on a large tree), checking
    the composed nodes (`_check_nodes`) before constructing the data; with where each
    value of the data is (`_spots`)."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}
        _check_nodes(path, node)
        return loader.construct_document(node), _spots(path, node)
    finally:
        loader.dispose()


def _spots(path: Path, root: yaml.Node) -> Spots:
    """Each value's path of keys (list items by index) -> the file and the line of its key
    (walked after construction, which folds `<<:` merge keys into the mappings)."""
    import yaml

    spots: Spots = {}

    def walk(node: yaml.Node, where: tuple) -> None:
        if isinstance(node, yaml.MappingNode):
            items = [(key.value, key, value) for key, value in node.value]
        elif isinstance(node, yaml.SequenceNode):
            items = [(index, item, item) for index, item in enumerate(node.value)]
        else:
            return
        for name, marked, value in items:
            spots[where + (name,)] = (path, f"line {marked.start_mark.line + 1}")
            walk(value, where + (name,))

    walk(root, ())
    return spots


# Nodes that aliases may add to the data: far more than anchors for shared settings need,
# far less than an alias bomb's billions (9 levels of 9 aliases in 721 bytes).
ALIAS_NODES_LIMIT = 100_000


def _check_nodes(path: Path, root: yaml.Node) -> None:
    """Each node once (an alias is the node its anchor names, not a copy): a key given
    twice, an alias inside its own anchor, and aliases that expand the data past
    ALIAS_NODES_LIMIT nodes are input errors."""
    import yaml

    sizes: dict[int, int] = {}  # id(node) -> nodes of its data with aliases expanded; -1 open

    def size(node: yaml.Node, where: tuple) -> int:
        known = sizes.get(id(node))
        if known == -1:
            raise InputError(path, f"'{dotted(where) or 'the top level'}' holds itself (an "
                             "alias `*name` inside the value its anchor `&name` marks)",
                             image=_image_at(where),
                             fix="remove the alias, or point it at another value")
        if known is not None:
            return known
        sizes[id(node)] = -1
        total = 1
        if isinstance(node, yaml.MappingNode):
            _check_unique_keys(path, node, where)
            total += sum(size(key, where) + size(value, where + (key.value,))
                         for key, value in node.value)
        elif isinstance(node, yaml.SequenceNode):
            total += sum(size(item, where) for item in node.value)
        sizes[id(node)] = total
        return total

    expanded = size(root, ())
    if expanded - len(sizes) > ALIAS_NODES_LIMIT:
        raise InputError(path, f"aliases (`*name`) expand the {len(sizes):,} values the file "
                         f"spells out to {expanded:,} (aliases may add at most "
                         f"{ALIAS_NODES_LIMIT:,})", fix="write the values out, or use aliases "
                         "that do not nest aliases many times over")


def _check_unique_keys(path: Path, node: yaml.MappingNode, where: tuple) -> None:
    """PyYAML keeps the last of two equal keys; a second `base:` must not replace the first."""
    seen: set[str] = set()
    for key_node, _ in node.value:
        key = key_node.value
        if not isinstance(key, str):  # a complex key: construction rejects it
            continue
        if key in seen:
            line = key_node.start_mark.line + 1
            raise InputError(path, f"key '{dotted(where + (key,))}' is given twice "
                             f"(again at line {line})", image=_image_at(where + (key,)),
                             fix="keep one of them, or rename one")
        seen.add(key)


def _image_at(where: tuple) -> str | None:
    """The image whose part of the file `where` (a path of keys) is in, if any."""
    return where[1] if len(where) > 1 and where[0] == "images" else None


def dotted(loc: tuple) -> str:
    return ".".join(str(part) for part in loc)


@dataclass
class Origins:
    """Where each value of a merged tree was given (`Spots`), for errors to name."""

    first: Path
    spots: Spots = field(default_factory=dict)

    def of(self, loc: tuple) -> Spot:
        """The spot of the value at `loc`, else of the nearest value holding it."""
        for end in range(len(loc), 0, -1):
            if loc[:end] in self.spots:
                return self.spots[loc[:end]]
        return self.first, ""

    def given(self, where: tuple, spots: Spots) -> None:
        """The value at `where`, with all inside it, is now the one `spots` place."""
        size = len(where)
        for old in [key for key in self.spots if key[:size] == where]:
            del self.spots[old]
        self.spots.update((key, spot) for key, spot in spots.items() if key[:size] == where)


def merge(base: Any, over: Any, where: tuple, origins: Origins, spots: Spots) -> Any:
    """`over` on top of `base`, as bake merges an override file: mappings key by key (an
    empty value, `nova:`, adds nothing to one); anything else, a list too, is replaced."""
    if not isinstance(base, dict) or not isinstance(over, dict | None):
        origins.given(where, spots)
        return over
    merged = dict(base)
    for key, value in (over or {}).items():
        if key in base:
            merged[key] = merge(base[key], value, where + (key,), origins, spots)
        else:
            merged[key] = value
            origins.given(where + (key,), spots)
    return merged


SET_FIX = ("write it as IMAGE.FIELD=VALUE (IMAGE may be a glob, e.g. 'nova-*.args.WORKERS=8'),"
           " or settings.FIELD=VALUE; VALUE is read as YAML")


_FLAT_MAPS = {("settings", "args"), ("settings", "labels"), ("images", "*", "args"),
              ("images", "*", "labels"), ("images", "*", "files"), ("kolla", "options")}


def apply_set(data: dict[str, Any], arg: str, origins: Origins,
              top_keys: Collection[str]) -> None:
    """One `--set PATH=VALUE`: the value at PATH of each image PATH names, replaced."""
    target, equals, text = arg.partition("=")
    words = target.split(".")
    if not equals or len(words) < 2 or "" in words:
        raise InputError(origins.first, f"--set {arg!r}: not a PATH=VALUE assignment",
                         fix=SET_FIX)
    value = _set_value(arg, text, origins.first)
    for where in _set_paths(data, tuple(words), arg, origins.first, top_keys):
        _put(data, where, copy.deepcopy(value), arg, origins.first)
        origins.given(where, {where: (origins.first, f"--set {arg!r}")})


def _set_value(arg: str, text: str, path: Path) -> Any:
    import yaml

    if not text:
        return ""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or str(err)
        raise InputError(path, f"--set {arg!r}: the value is not YAML ({problem})",
                         fix="quote it as a YAML string, e.g. --set 'nova.args.X=\"a: [b\"'"
                         ) from None


def _set_paths(data: dict[str, Any], words: tuple[str, ...], arg: str, path: Path,
               top_keys: Collection[str]) -> list[tuple]:
    """The paths a --set names: from the top (`settings.tag`), or in each image whose name
    matches its first word, a glob (`nova-*.args.X`, or `images.nova-*.args.X`)."""
    if words[0] in top_keys and words[0] != "images":
        return [_one_key_after_flat_maps(words)]
    pattern, rest = (words[1], words[2:]) if words[0] == "images" else (words[0], words[1:])
    images = data.get("images")
    names = [name for name in images if fnmatch.fnmatchcase(str(name), pattern)
             ] if isinstance(images, dict) else []
    if not names and "kolla" in data and not set("*?[") & set(pattern):
        names = [pattern]  # one of Kolla's images, refined under `images:`
    if not rest or not names:
        problem = (f"{pattern!r} matches no image under `images:`" if rest else
                   "names an image but no field of it")
        raise InputError(path, f"--set {arg!r}: {problem}", fix=SET_FIX + "; in a Kolla "
                         "tree, a glob matches only the images under `images:`, a name any "
                         "of Kolla's")
    return [_one_key_after_flat_maps(("images", name, *rest)) for name in names]


def _one_key_after_flat_maps(where: tuple[str, ...]) -> tuple[str, ...]:
    shape = ("images", "*", *where[2:]) if where[0] == "images" else where
    for size in range(2, len(where)):
        if shape[:size] in _FLAT_MAPS:
            return (*where[:size], ".".join(where[size:]))
    return where


def _put(data: dict[str, Any], where: tuple, value: Any, arg: str, path: Path) -> None:
    node = data
    for depth, key in enumerate(where[:-1]):
        if node.get(key) is None:
            node[key] = {}
        if not isinstance(node[key], dict):
            raise InputError(path, f"--set {arg!r}: '{dotted(where[:depth + 1])}' is not a "
                             "mapping", fix=SET_FIX)
        node = node[key]
    node[where[-1]] = value
