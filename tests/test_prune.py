"""What prune decides, from storage contents and registry tags given as data (no buildah)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import REPO

from buildlib import project, prune
from buildlib.settled import Settled
from buildlib.storage_format import StorageContents, StoredImage

OLD, NEW, OLDER = "ib-" + "1" * 32, "ib-" + "2" * 32, "ib-" + "3" * 32


@pytest.fixture(scope="module")
def proj() -> project.Project:
    return project.load(REPO / "images.yaml")


def key_name(image: str, tag: str) -> str:
    return f"localhost/imagebake/{image}:{tag}"


def image(image_id: str, *names: str, layer: str | None = None,
          history: tuple[str, ...] | None = None) -> StoredImage:
    return StoredImage(f"sha256:{image_id}", frozenset(names), layer, False, history,
                       (layer,) if layer else ())


def contents(*images: StoredImage, in_use: frozenset[str] = frozenset()) -> StorageContents:
    layers = {i.layer: (None, 1000) for i in images if i.layer}
    return StorageContents({i.id: i for i in images}, layers, in_use, complete=True)


def steps(*commands: str) -> tuple[str, ...]:
    return tuple(json.dumps({"created_by": c}, sort_keys=True) for c in commands)


def test_old_keys_go_current_and_unrecorded_stay(proj: project.Project) -> None:
    stored = contents(image("a", key_name("cron", NEW), "localhost:5000/kolla/cron:latest",
                            layer="l2"),
                      image("b", key_name("cron", OLD), layer="l1"),
                      image("c", key_name("cron", OLDER), layer="l3"))
    plan = prune.plan_local(proj, ["cron"], stored, {"cron": {NEW}}, {"cron": [OLD, NEW]})
    assert [i.id for i in plan.remove] == ["sha256:b"]
    assert plan.unknown == [key_name("cron", OLDER)]  # no record says it is this tree's
    assert plan.frees == 1000


def test_an_image_a_user_named_stays_and_loses_only_its_old_key_name(
        proj: project.Project) -> None:
    stored = contents(image("b", key_name("cron", OLD), "localhost/mine:x", layer="l1"))
    plan = prune.plan_local(proj, ["cron"], stored, {"cron": {NEW}}, {"cron": [OLD]})
    assert plan.remove == []
    assert list(plan.untag) == [key_name("cron", OLD)]
    assert "localhost/mine:x" in plan.untag[key_name("cron", OLD)]
    assert plan.frees == 0


def test_an_image_a_container_uses_stays(proj: project.Project) -> None:
    stored = contents(image("b", key_name("cron", OLD), layer="l1"),
                      in_use=frozenset({"sha256:b"}))
    plan = prune.plan_local(proj, ["cron"], stored, {"cron": set()}, {"cron": [OLD]})
    assert plan.remove == [] and key_name("cron", OLD) in plan.kept


def test_images_outside_the_selection_are_left_alone(proj: project.Project) -> None:
    stored = contents(image("b", key_name("cron", OLD), layer="l1"))
    plan = prune.plan_local(proj, ["base"], stored, {"base": set()}, {"cron": [OLD]})
    assert plan.remove == [] and plan.untag == {}


def test_intermediate_images_go_only_with_every_image_built_through_them(
        proj: project.Project) -> None:
    shared = image("s", layer="l0", history=steps("FROM"))
    only_old = image("o", layer="l1", history=steps("FROM", "RUN old"))
    nobodys = image("n", layer="l9", history=steps("FROM", "RUN failed"))
    stored = contents(shared, only_old, nobodys,
                      image("b", key_name("cron", OLD), layer="l1",
                            history=steps("FROM", "RUN old", "CMD")),
                      image("a", key_name("cron", NEW), layer="l2",
                            history=steps("FROM", "RUN new")))
    plan = prune.plan_local(proj, ["cron"], stored, {"cron": {NEW}}, {"cron": [OLD, NEW]})
    assert [i.id for i in plan.intermediates] == ["sha256:o"]


def test_keep_keeps_the_most_recently_used_old_keys() -> None:
    record = {"cron": [OLDER, OLD, NEW]}
    assert prune.kept_tags(["cron"], {"cron": {NEW}}, record, 0) == {"cron": {NEW}}
    assert prune.kept_tags(["cron"], {"cron": {NEW}}, record, 1) == {"cron": {NEW, OLD}}
    assert prune.kept_tags(["cron"], {"cron": {NEW}}, record, 5) == {"cron": {NEW, OLD, OLDER}}


def test_the_record_orders_keys_by_their_last_use(tmp_path: Path) -> None:
    here = SimpleNamespace(build_dir=tmp_path)  # all the record needs of a project
    lock = threading.Lock()
    prune.remember(here,  # type: ignore[arg-type]
                    "cron", Settled(None, "1" * 64), lock)
    prune.remember(here, "cron", Settled(None, "2" * 64), lock)  # type: ignore[arg-type]
    prune.remember(here, "cron", Settled(None, "1" * 64), lock)  # type: ignore[arg-type]
    (tmp_path / prune.RECORD_FILE).open("a").write('{"image": "cron", "ta')  # cut short
    assert prune.recorded(here) == {"cron": [NEW, OLD]}
    prune.rewrite_record(here, prune.recorded(here))
    assert prune.recorded(here) == {"cron": [NEW, OLD]}
    assert len((tmp_path / prune.RECORD_FILE).read_text().splitlines()) == 2


def test_registry_manifests_of_old_keys_go_unless_a_staying_tag_names_them() -> None:
    tags = {"cron": {"latest": "d-new", NEW: "d-new", OLD: "d-old", OLDER: "d-user",
                     "mine": "d-user", "ib-" + "4" * 32: "d-theirs"}}
    plan = prune.plan_registry({"cron": "kolla/cron"}, tags, {"cron": {NEW}},
                               {"cron": [OLDER, OLD, NEW]})
    assert plan.delete == {"kolla/cron@d-old": [OLD]}
    assert plan.kept == {f"kolla/cron:{OLDER}": "names the same manifest as a tag that stays"}
    assert plan.unknown == 1


@pytest.mark.parametrize(("line", "key"), [("keep_keys: -1", "settings.keep_keys"),
                                           ("push_jobs: -2", "settings.push_jobs"),
                                           ("push_jobs: many", "settings.push_jobs")])
def test_keep_keys_and_push_jobs_are_checked(tmp_path: Path, line: str, key: str) -> None:
    from buildlib import config_load
    from buildlib.errors import InputError

    path = tmp_path / "images.yaml"
    path.write_text(f"settings:\n  {line}\nimages:\n  base: {{}}\n")
    with pytest.raises(InputError) as info:
        config_load.load(path)
    assert key in str(info.value)


def test_keep_keys_and_push_jobs_defaults(tmp_path: Path) -> None:
    from buildlib import config_load

    path = tmp_path / "images.yaml"
    path.write_text("images:\n  base: {}\n")
    settings = config_load.load(path).settings
    assert (settings.keep_keys, settings.push_jobs) == (None, 4)


def test_the_record_drops_a_key_only_when_both_places_lost_it() -> None:
    record = {"cron": [OLDER, OLD, NEW], "base": [OLD]}
    local = {("cron", OLD), ("cron", NEW)}  # OLD: a working container kept its image
    # the registry lost OLDER and OLD of cron; base's tags were not listed
    kept = prune.still_held(record, local, {"cron": {NEW}})
    assert kept == {"cron": [OLD, NEW], "base": [OLD]}
    assert prune.still_held(record, set(), None) == record  # registry not asked: all stay
