"""The docs stand on the code: the reference and the schema are what the code makes now,
the schema accepts every example tree and refuses what loading refuses, and the README's
links resolve inside the repository."""

from __future__ import annotations

import copy
import dataclasses
import re
import unicodedata
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from buildlib import config_load, options, reference_docs
from buildlib.errors import InputError

REPO = Path(__file__).resolve().parents[1]
DOC_FILES = sorted([REPO / "README.md", *(REPO / "docs").rglob("*.md")])
YAML_BLOCK = re.compile(r"^```yaml\n(.*?)^```", re.M | re.S)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def test_generated_reference_and_schema_are_current() -> None:
    assert reference_docs.stale() == [], "run `make schema` and commit what it writes"


def test_a_field_without_a_description_fails_the_reference() -> None:
    found = reference_docs.schema()
    del found["$defs"]["Settings"]["properties"]["jobs"]["description"]
    with pytest.raises(reference_docs.MissingDescription, match="Settings.jobs"):
        reference_docs.fields_page(found)


def test_every_field_of_the_model_is_on_the_reference_page() -> None:
    page = (REPO / reference_docs.FIELDS_PAGE).read_text()
    for _, prefix, model in reference_docs.SECTIONS:
        for field in reference_docs.dataclasses.fields(model):
            if field.init:
                assert f"`{prefix}{field.name}`" in page


@dataclasses.dataclass(frozen=True)
class WithColour(options.Options):
    colour: str | None = options.variable("NAME", "build")
    """a variable nobody documented yet"""


@dataclasses.dataclass(frozen=True)
class WithUndescribed(options.Options):
    shade: str | None = options.variable("NAME", "build")


def test_a_variable_added_to_the_model_makes_the_page_stale(monkeypatch) -> None:
    monkeypatch.setattr(options, "Options", WithColour)
    assert reference_docs.stale() == [reference_docs.VARIABLES_PAGE]
    assert "| `colour=NAME` | build | a variable nobody documented yet |" in (
        reference_docs.variables_page())


def test_a_variable_without_a_description_fails_the_reference(monkeypatch) -> None:
    monkeypatch.setattr(options, "Options", WithUndescribed)
    with pytest.raises(reference_docs.MissingDescription, match="WithUndescribed.shade"):
        reference_docs.variables_page()


def test_the_command_line_is_read_as_each_fields_default_says() -> None:
    read = options.Options.read({"images": "nova,,^cron$", "fail_fast": "Yes", "dry": "no",
                                 "cache": "", "keep": "2", "set.base.args.X": "8",
                                 "colour": "red", "set.settings.tag": "rc1"})
    assert read.images == ("nova", "^cron$") and read.fail_fast and not read.dry
    assert read.cache is None and read.keep == "2" and read.platform is None
    assert read.sets == ("base.args.X=8", "settings.tag=rc1")
    assert not hasattr(read, "colour")
    assert options.Options.read({}) == options.Options()


def test_only_the_model_reads_the_command_line_and_every_variable_is_used() -> None:
    code = ""
    for path in (REPO / "buildlib").glob("*.py"):
        text = path.read_text()
        if path.name not in ("options.py", "doit_seam.py"):
            assert "get_var(" not in text and "command_line_variables(" not in text, (
                f"{path.name}: read variables through `options.Options`")
        code += text
    for field in dataclasses.fields(options.Options):
        assert re.search(rf"options\.{field.name}\b", code), f"nothing reads {field.name}="


def schema_validator(require_images: bool = True) -> jsonschema.Draft202012Validator:
    schema = reference_docs.schema()
    if not require_images:
        schema = copy.deepcopy(schema)
        del schema["anyOf"]
    return jsonschema.Draft202012Validator(schema)


def test_the_schema_accepts_the_example_tree_and_its_header_names_it() -> None:
    text = (REPO / "images.yaml").read_text()
    assert text.startswith("# yaml-language-server: $schema=docs/images.schema.json\n")
    schema_validator().validate(yaml.safe_load(text))


def doc_examples() -> list[tuple[str, Any]]:
    found = []
    for path in DOC_FILES:
        for number, block in enumerate(YAML_BLOCK.findall(path.read_text())):
            data = yaml.safe_load(block)
            if data is not None:  # not only a comment
                found.append((f"{path.relative_to(REPO)}#{number}", data))
    return found


@pytest.mark.parametrize(("where", "data"), doc_examples(), ids=lambda v: str(v)[:40])
def test_the_schema_accepts_every_images_yaml_example_of_the_docs(where: str, data: Any
                                                                  ) -> None:
    whole = "images" in data or "kolla" in data
    schema_validator(require_images=whole).validate(data)


@pytest.mark.parametrize("text", [
    "settings: {registy: localhost:5000}\nimages: {base: {}}\n",
    "images:\n  base: {}\n  child: {parnet: base}\n",
    "images:\n  base: {sources: {src: {lcoal: ../src}}}\n",
    "imagse: {base: {}}\n",
    "images: {base: {}}\nsettings: {jobs: 0}\n",
])
def test_the_schema_refuses_what_loading_refuses(tmp_path: Path, text: str) -> None:
    assert not schema_validator().is_valid(yaml.safe_load(text))
    (tmp_path / "images.yaml").write_text(text)
    with pytest.raises(InputError):
        config_load.load(tmp_path / "images.yaml")


def slug(heading: str) -> str:
    """A heading's anchor as Python-Markdown's toc writes it."""
    text = unicodedata.normalize("NFKD", heading).encode("ascii", "ignore").decode()
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.M | re.S)
    return {slug(line.lstrip("#").strip()) for line in text.splitlines()
            if line.startswith("#")}


def test_the_readme_is_a_front_page_whose_links_resolve_in_the_repository() -> None:
    readme = REPO / "README.md"
    assert len(readme.read_text().splitlines()) <= 250
    targets = [t for t in LINK.findall(readme.read_text()) if not t.startswith("https://")]
    assert len(targets) >= 10
    for target in targets:
        file, _, anchor = target.partition("#")
        assert (REPO / file).is_file(), f"README.md links to {file}, which is not there"
        if anchor:
            assert anchor in anchors(REPO / file), f"README.md links to {target}: no such heading"


def test_nothing_in_the_repository_names_a_folder_beside_it() -> None:
    for path in [*DOC_FILES, *(REPO / "buildlib").glob("*.py"), *(REPO / "tests").glob("*.py"),
                 *(REPO / "bench").glob("*.py"), REPO / "Makefile"]:
        assert "../" + "shared" not in path.read_text(), path


def keys_used(data: dict[str, Any]) -> set[str]:
    """Every key an images.yaml example sets, spelt as the reference spells it."""
    used = {key for key in data}
    sections = {"settings": "settings.", "jinja": "jinja.", "kolla": "kolla."}
    for section, prefix in sections.items():
        used |= {prefix + key for key in data.get(section) or {}}
    for nested in ("sign", "trust"):  # settings.sign.key, settings.trust.keys
        used |= {f"settings.{nested}.{key}" for key in
                 (data.get("settings") or {}).get(nested) or {}}
    for image in (data.get("images") or {}).values():
        used |= {"images.NAME." + key for key in image or {}}
        for source in ((image or {}).get("sources") or {}).values():
            used |= {"images.NAME.sources.NAME." + key for key in source}
    for owner in [data.get("settings") or {}, *((data.get("images") or {}).values())]:
        for secret in ((owner or {}).get("secrets") or {}).values():
            used |= {"secrets.ID." + key for key in secret}
    return used


def test_writing_images_yaml_shows_every_field_in_an_example() -> None:
    shown: set[str] = set()
    for where, data in doc_examples():
        if where.startswith(("docs/images-yaml.md", "docs/kolla.md")):
            shown |= keys_used(data)
    fields = {prefix + field.name for _, prefix, model in reference_docs.SECTIONS
              for field in reference_docs.dataclasses.fields(model) if field.init}
    assert fields - shown == set(), "give each of these an example in docs/images-yaml.md"
