"""`doit render` (`imagebake render`): every selected image's Dockerfile and context
written, as its template renders it, and nothing built."""

from __future__ import annotations

from pathlib import Path

from conftest import Tree, make_tree

from buildlib import project


def test_render_writes_dockerfiles_and_contexts_and_builds_nothing(tmp_path: Path) -> None:
    tree: Tree = make_tree(tmp_path)
    result = tree.doit("render", "images=^nova-api$")
    assert tree.buildah_calls() == []
    plans = project.load(tree.config).plans
    build = tree.root / "build"
    rendered = sorted(p.parent.name for p in build.glob("*/Dockerfile"))
    assert rendered == ["base", "nova-api", "nova-base", "openstack-base"]
    for name in rendered:  # its own FROM line, not the name of a key
        assert (build / name / "Dockerfile").read_text() == plans[name].context.dockerfile
        assert sorted(str(p.relative_to(build / name / "context"))
                      for p in (build / name / "context").rglob("*") if p.is_file()) \
            == sorted(plans[name].context.files)
    nova_api = (build / "nova-api" / "Dockerfile").read_text()
    assert f"\nFROM {plans['nova-base'].reference}\n" in nova_api
    assert (build / "base" / "context" / "busybox").is_file()
    assert "wrote the Dockerfile and context of 4 images" in result.stdout


def test_render_takes_no_lock_and_names_a_foreign_folder(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    foreign = tree.root / "build" / "cron"
    foreign.mkdir(parents=True)
    (foreign / "notes.txt").write_text("mine")
    result = tree.doit("render", check=False)
    assert result.returncode == 1
    assert "cannot render cron" in result.stdout + result.stderr
    assert (foreign / "notes.txt").read_text() == "mine"
