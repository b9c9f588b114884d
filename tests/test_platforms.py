"""Multi-arch images without buildah: `platforms:` validated, inherited and checked against
the parent's; one key per platform and a list key of theirs; what buildah is asked."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from buildlib import buildah, builder, config_load, keys, project, publish, standing
from buildlib.errors import InputError
from buildlib.run import bench_of, services_of

PLATFORMS = ["linux/amd64", "linux/arm64"]


def tree(tmp_path: Path, images_yaml: str) -> Path:
    """A COPY-only tree: `root` FROM scratch, every other image COPYs onto its parent."""
    path = tmp_path / "images.yaml"
    path.write_text(textwrap.dedent(images_yaml))
    for name in ("root", "child", "grandchild", "other"):
        folder = tmp_path / "templates" / name
        folder.mkdir(parents=True)
        (folder / f"{name}.txt").write_text(f"{name}\n")
        first = "FROM scratch" if name in ("root", "other") else "FROM {{ parent_image }}"
        (folder / "Dockerfile.j2").write_text(f"{first}\nCOPY {name}.txt /{name}.txt\n")
    return path


def records(plan: project.ImagePlan, parent: standing.Parent = None
            ) -> dict[str, keys.Record]:
    """The plan's record of each platform, as a build derives them: on what it stands on
    (a root's base: none, FROM scratch; a child's: `parent`, its parent's image of each)."""
    ground = standing.stands_on(plan, parent, lambda reference: None)
    assert isinstance(ground, standing.Ground), ground
    return ground.records(plan)


def load_error(path: Path, image: str | None) -> str:
    with pytest.raises(InputError) as info:
        project.load(path)
    message = str(info.value)
    assert str(path.resolve()) in message and "fix:" in message, message
    assert info.value.image == image, message
    return message


@pytest.mark.parametrize(("platforms", "shown"), [
    ("[linux]", "'linux' is not a platform"),
    ("[linux/amd64, amd64]", "'amd64' is not a platform"),
    ("[Linux/AMD64]", "'Linux/AMD64' is not a platform"),
    ("[linux/amd64/v2/x]", "is not a platform"),
    ("[]", "empty"),
    ("linux/amd64", "is not a list"),
    ("[linux/amd64, linux/arm64, linux/amd64]", "linux/amd64 is given twice"),
])
def test_a_bad_platform_is_one_error_naming_the_image_and_the_fix(
        tmp_path: Path, platforms: str, shown: str) -> None:
    path = tree(tmp_path, f"images:\n  root: {{platforms: {platforms}}}\n")
    message = load_error(path, "root")
    assert shown in message, message
    assert "images.root.platforms" in message
    assert "os/arch[/variant]" in message


def test_a_bad_platform_in_settings_names_settings(tmp_path: Path) -> None:
    path = tree(tmp_path, "settings: {platforms: [linux/amd64, linux/amd64]}\n"
                          "images:\n  root: {}\n")
    message = load_error(path, None)
    assert "settings.platforms: linux/amd64 is given twice" in message


def test_variants_and_other_systems_load(tmp_path: Path) -> None:
    path = tree(tmp_path, "images:\n  root: {platforms: [linux/arm/v7, linux/s390x, "
                          "windows/amd64]}\n")
    assert config_load.load(path).images["root"].platforms == ["linux/arm/v7", "linux/s390x",
                                                          "windows/amd64"]


def test_platforms_come_from_the_image_else_its_parent_else_settings(tmp_path: Path) -> None:
    path = tree(tmp_path, """\
        settings: {platforms: [linux/amd64, linux/arm64]}
        images:
          root: {}
          child: {parent: root, platforms: [linux/arm64]}
          grandchild: {parent: child}
          other: {platforms: [linux/s390x]}
        """)
    plans = project.load(path).plans
    assert plans["root"].platforms == tuple(PLATFORMS)
    assert plans["child"].platforms == ("linux/arm64",)
    assert plans["grandchild"].platforms == ("linux/arm64",)
    assert plans["other"].platforms == ("linux/s390x",)


def test_no_platforms_is_the_native_image_as_before(tmp_path: Path) -> None:
    path = tree(tmp_path, "images:\n  root: {}\n  child: {parent: root}\n")
    plan = project.load(path).plans["child"]
    assert plan.platforms == ()
    assert plan.local_names("ab" * 32) == [f"localhost/imagebake/child:ib-{'ab' * 16}",
                                           plan.reference]
    assert plan.sources.platform is None


def test_a_child_platform_its_parent_lacks_names_both(tmp_path: Path) -> None:
    path = tree(tmp_path, """\
        images:
          root: {platforms: [linux/amd64]}
          child: {parent: root, platforms: [linux/amd64, linux/arm64]}
        """)
    message = load_error(path, "child")
    assert "linux/arm64 is not a platform of its parent 'root'" in message
    assert "'root'" in message and "'child'" in message


def test_a_multi_arch_child_of_a_native_parent_is_an_error(tmp_path: Path) -> None:
    path = tree(tmp_path, """\
        images:
          root: {}
          child: {parent: root, platforms: [linux/amd64]}
        """)
    message = load_error(path, "child")
    assert "built for the native platform only" in message


def test_one_key_per_platform_on_the_parent_image_of_that_platform(tmp_path: Path) -> None:
    path = tree(tmp_path, """\
        settings: {platforms: [linux/amd64, linux/arm64]}
        images:
          root: {}
          child: {parent: root}
        """)
    plans = project.load(path).plans
    roots = records(plans["root"])
    assert {p: r.platform for p, r in roots.items()} == {p: p for p in PLATFORMS}
    assert len({r.key for r in roots.values()} | {plans["root"].sources.key}) == 3
    assert all(r.parent_id is None for r in roots.values())

    parent_ids = {"linux/amd64": "sha256:amd", "linux/arm64": "sha256:arm"}
    children = records(plans["child"], parent_ids)
    assert {p: r.parent_id for p, r in children.items()} == parent_ids
    moved = records(plans["child"], {**parent_ids, "linux/arm64": "sha256:arm2"})
    assert moved["linux/amd64"].key == children["linux/amd64"].key  # cut-off per platform
    assert moved["linux/arm64"].key != children["linux/arm64"].key
    assert "platform changed: linux/amd64 -> linux/arm64" in keys.changes(
        children["linux/amd64"].as_dict(), children["linux/arm64"], "root")


def test_the_list_key_changes_with_any_platform_key_and_only_then() -> None:
    one = keys.list_key({"linux/amd64": "a" * 64, "linux/arm64": "b" * 64})
    assert one == keys.list_key({"linux/arm64": "b" * 64, "linux/amd64": "a" * 64})
    assert one != keys.list_key({"linux/amd64": "a" * 64, "linux/arm64": "c" * 64})
    assert one != keys.list_key({"linux/amd64": "a" * 64})
    assert one not in ("a" * 64, "b" * 64)


def test_a_platform_image_is_named_by_its_key_and_the_reference_names_the_list(
        tmp_path: Path) -> None:
    path = tree(tmp_path, "settings: {platforms: [linux/amd64, linux/arm64]}\n"
                          "images:\n  root: {}\n")
    proj = project.load(path)
    plan = proj.plans["root"]
    record = records(plan)["linux/arm64"]
    assert plan.local_names(record.key) == [f"localhost/imagebake/root:ib-{record.key[:32]}"]
    assert plan.list_names("c" * 64) == [f"localhost/imagebake/root:ib-{'c' * 32}",
                                         plan.reference]
    argv = builder.bud_argv(bench_of(proj, services_of(proj)), plan, record)
    assert argv[argv.index("--platform") + 1] == "linux/arm64"
    assert "--layers=false" in argv and "--layers" not in argv
    assert argv[argv.index("--tag") + 1] == plan.local_names(record.key)[0]
    assert plan.reference not in argv

    push = publish.push_argv(proj, services_of(proj), "root", "c" * 64)
    assert push[push.index("manifest"):push.index("manifest") + 3] == ["manifest", "push",
                                                                       "--all"]
    assert push[-2:] == [plan.reference, f"docker://{plan.key_reference('c' * 64)}"]


def test_a_native_build_keeps_its_options() -> None:
    options = buildah.bud_options(["x"], fmt="oci", timestamp=0, isolation=None, args={},
                                  volumes=[])
    assert options[:4] == ["--format", "oci", "--layers", "--identity-label=false"]
    assert "--platform" not in options


def test_the_walk_from_the_roots_keys_each_platform(tmp_path: Path) -> None:
    path = tree(tmp_path, """\
        settings: {platforms: [linux/amd64, linux/arm64]}
        images:
          root: {}
          child: {parent: root}
        """)
    proj = project.load(path)
    in_storage = {record.key: f"sha256:{platform[6:]}" for platform, record
                  in records(proj.plans["root"]).items()}
    walked = list(standing.walk(
        proj.plans, ["root", "child"], lambda reference: None,
        lambda name, records: {p: in_storage.get(r.key) for p, r in records.items()}))
    assert [(step.name, dict(step.ids)) for step in walked] == [
        ("root", {"linux/amd64": "sha256:amd64", "linux/arm64": "sha256:arm64"}),
        ("child", {"linux/amd64": None, "linux/arm64": None})]
    expected = records(proj.plans["child"],
                       {"linux/amd64": "sha256:amd64", "linux/arm64": "sha256:arm64"})
    assert [r.key for r in walked[1].records.values()] == [r.key for r in expected.values()]


def test_a_build_without_the_layer_cache_keeps_its_layers() -> None:
    options = buildah.bud_options(["x"], fmt="oci", timestamp=0, isolation=None, args={},
                                  volumes=[], layer_cache=False)
    assert options[:5] == ["--format", "oci", "--layers", "--no-cache",
                           "--identity-label=false"]
