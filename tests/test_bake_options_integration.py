"""Per image `target:` and `contexts:`, and the forced fresh build `no_cache=1`, with real
buildah: the named stage is what is built, a named context's file edit rebuilds, and
no_cache=1 gives the selected image a new RUN output under its unchanged key, and its
children rebuild on it."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Tree, unmount_under
from test_platforms_integration import built_for, calls, platform_tree

pytestmark = pytest.mark.integration

STAGES = """FROM {{ parent_image }} AS tools
RUN echo tools > /stage
FROM {{ parent_image }} AS final
COPY --from=tools /stage /from-tools
RUN echo final > /stage
"""
NAMED_CONTEXT = "FROM {{ parent_image }}\nCOPY --from=extra note.txt /note.txt\n"
STAMP = "FROM {{ parent_image }}\nRUN date +%s%N > /stamp\n"
CHILD = "FROM {{ parent_image }}\nRUN cp /stamp /child-stamp\n"


def add_image(tree: Tree, name: str, template: str, **fields: object) -> None:
    (tree.root / "templates" / name).mkdir()
    (tree.root / "templates" / name / "Dockerfile.j2").write_text(template)
    tree.edit_yaml(lambda data: data["images"].update({name: fields}))


def file_in(tree: Tree, name: str, path: str) -> str:
    """A file of the image `name` as the tree tagged it."""
    reference = f"localhost:5000/kolla/{name}:latest"
    container = tree.buildah("from", "--pull=never", reference).strip()
    try:
        return (Path(tree.buildah("mount", container).strip()) / path).read_text()
    finally:
        tree.buildah("rm", container)


def entry(tree: Tree, name: str) -> tuple[str, str]:
    found = tree.report()["images"][name]
    return found["status"], found["key"]


def test_target_builds_the_named_stage_and_is_in_the_key(tree: Tree) -> None:
    add_image(tree, "staged", STAGES, parent="base")
    tree.doit("build", "images=^staged$")
    assert file_in(tree, "staged", "stage") == "final\n"
    _, last_stage = entry(tree, "staged")

    tree.edit_yaml(lambda data: data["images"]["staged"].update(target="tools"))
    tree.doit("build", "images=^staged$")
    assert file_in(tree, "staged", "stage") == "tools\n"
    status, tools = entry(tree, "staged")
    assert status == "built" and tools != last_stage
    assert next(
        call[call.index("--target"):call.index("--target") + 2]
        for call in tree.buildah_calls() if "bud" in call) == ["--target", "tools"]

    tree.edit_yaml(lambda data: data["images"]["staged"].update(target="nope"))
    failed = tree.doit("status", check=False)
    assert failed.returncode == 1
    assert "image 'staged'" in failed.stderr and "no stage named 'nope'" in failed.stderr
    assert "tools, final" in failed.stderr


def test_a_named_context_is_read_and_its_edit_rebuilds(tree: Tree) -> None:
    extra = tree.root / "extra"
    extra.mkdir()
    (extra / "note.txt").write_text("one\n")
    add_image(tree, "noted", NAMED_CONTEXT, parent="base", contexts={"extra": "extra"})
    tree.doit("build", "images=^noted$")
    assert file_in(tree, "noted", "note.txt") == "one\n"
    assert entry(tree, "noted")[0] == "built"

    tree.doit("build", "images=^noted$")
    assert entry(tree, "noted")[0] == "up-to-date"

    (extra / "note.txt").write_text("two\n")
    assert "build context changed" in tree.doit("status", "images=^noted$").stdout
    tree.doit("build", "images=^noted$")
    assert file_in(tree, "noted", "note.txt") == "two\n"
    assert entry(tree, "noted")[0] == "built"


def test_no_cache_rebuilds_the_selected_image_afresh_and_then_its_children(
        tree: Tree) -> None:
    add_image(tree, "stamp", STAMP, parent="base")
    add_image(tree, "stamp-child", CHILD, parent="stamp")
    tree.doit("build", "images=^stamp")
    first = file_in(tree, "stamp", "stamp")
    _, key = entry(tree, "stamp")
    _, child_key = entry(tree, "stamp-child")

    fresh = ("images=^stamp$", "skip_parents=1", "no_cache=1")
    status = tree.doit("status", *fresh).stdout
    assert "base            would build: forced fresh build (no_cache=1)" in status, status
    tree.doit("build", *fresh)
    assert file_in(tree, "stamp", "stamp") != first
    assert entry(tree, "stamp") == ("built", key)  # the new image takes the key's names
    bud = next(call for call in tree.buildah_calls() if "bud" in call)
    assert "--no-cache" in bud

    tree.doit("build", "images=^stamp")
    statuses = tree.statuses()
    assert statuses["stamp"] == "up-to-date" and statuses["base"] == "up-to-date"
    assert statuses["stamp-child"] == "built" and entry(tree, "stamp-child")[1] != child_key
    assert file_in(tree, "stamp-child", "child-stamp") == file_in(tree, "stamp", "stamp")


def test_no_cache_makes_a_multi_arch_images_list_anew(tmp_path: Path) -> None:
    tree = platform_tree(tmp_path / "multi", {"root": {}},
                         {"root/Dockerfile.j2": "FROM scratch\nCOPY hello.txt /hello.txt\n"},
                         {"root/hello.txt": "hello\n"})
    try:
        tree.doit("build")
        _, key = entry(tree, "root")
        tree.doit("build", "no_cache=1")
        assert sorted(built_for(call) for call in calls(tree, "bud")) == [
            ("root", "linux/amd64"), ("root", "linux/arm64")]
        assert all("--layers=false" in call for call in calls(tree, "bud"))
        assert len(calls(tree, "create")) == 1  # the list, made anew
        assert entry(tree, "root") == ("built", key)
        listed = tree.buildah("manifest", "inspect", "localhost:5000/multi/root:latest")
        assert listed.count('"digest"') == 2
        tree.doit("build")
        assert tree.statuses() == {"root": "up-to-date"}
    finally:
        unmount_under(tmp_path / "multi")
