"""buildlib.standing and buildlib.settled: what an image stands on, the walk from the roots,
and what an image settled on as doit saves it."""

from __future__ import annotations

from pathlib import Path

from test_platforms import tree

from buildlib import project, standing
from buildlib.settled import How, Settled

NATIVE = """\
    images:
      root: {}
      child: {parent: root}
      grandchild: {parent: child}
    """


def test_a_child_stands_on_its_parents_image_and_is_keyed_on_it(tmp_path: Path) -> None:
    proj = project.load(tree(tmp_path, NATIVE))
    child = proj.plans["child"]
    ground = standing.stands_on(child, {None: "sha256:root"}, lambda reference: None)
    assert isinstance(ground, standing.Ground)
    assert ground.records(child)[None].key == child.record_on("sha256:root").key
    assert ground.records(child)[None].key != child.record_on("sha256:other").key


def test_what_cannot_be_known_is_blocked_not_fatal(tmp_path: Path) -> None:
    proj = project.load(tree(tmp_path, NATIVE))
    unknown = standing.stands_on(proj.plans["child"], None, lambda reference: None)
    assert unknown == standing.Blocked("parent 'root' would be rebuilt")
    absent = standing.stands_on(proj.plans["child"], {None: None}, lambda reference: None)
    assert isinstance(absent, standing.Blocked) and not absent.fatal
    assert "has no image" in absent.reason
    fatal = standing.Blocked("cannot build child", fatal=True)
    assert standing.stands_on(proj.plans["child"], fatal, lambda reference: None) is fatal


def test_the_walk_stops_below_an_image_it_does_not_find(tmp_path: Path) -> None:
    proj = project.load(tree(tmp_path, NATIVE))
    root_key = proj.plans["root"].record_on(None).key
    steps = list(standing.walk(
        proj.plans, ["root", "child", "grandchild"], lambda reference: None,
        lambda name, records: {p: "sha256:root" if r.key == root_key else None
                               for p, r in records.items()}))
    assert [step.name for step in steps] == ["root", "child", "grandchild"]
    assert [step.found for step in steps] == [True, False, False]
    assert steps[1].records[None].key == proj.plans["child"].record_on("sha256:root").key
    assert isinstance(steps[2].standing, standing.Blocked) and not steps[2].records


def test_settled_state_is_saved_and_read_back_as_doit_keeps_it() -> None:
    values = {"id": "sha256:list", "key": "k", "found": "built", "image": "r/x:1",
              "start": 1.0, "end": 2.0, "cpu_seconds": 0.0,
              "platforms": {"linux/arm64": {"id": "sha256:a", "key": "ka", "found": "local",
                                            "record": {"version": 1}}}}
    settled = Settled.from_values(values)
    assert settled is not None
    assert settled.how is How.BUILT
    assert settled.ids() == {"linux/arm64": "sha256:a"}
    assert settled.all_keys() == ["ka", "k"]
    assert settled.as_values() == values
    assert Settled.from_values({}) is None
    pinned = Settled("sha256:p", None, How.REGISTRY, pinned="r/x@sha256:1")
    assert pinned.ids() == {None: "sha256:p"} and pinned.all_keys() == []
    assert Settled.from_values(pinned.as_values()) == pinned
