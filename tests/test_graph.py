"""buildlib.graph: missing parents and cycles are errors; order, levels, ancestors,
descendants and the longest path."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import pytest
import yaml
from conftest import KOLLA_TREE, REPO

from buildlib.graph import Graph, GraphError

SMALL = {
    "base": None,
    "openstack-base": "base",
    "nova-base": "openstack-base",
    "nova-api": "nova-base",
    "nova-conductor": "nova-base",
    "neutron-base": "openstack-base",
    "neutron-dhcp-agent": "neutron-base",
    "cron": "base",
    "other-root": None,
    "other-child": "other-root",
}


@pytest.fixture(scope="module")
def kolla() -> dict[str, str | None]:
    tree = yaml.safe_load(KOLLA_TREE.read_text())
    assert len(tree) == 188
    return tree


def test_the_kolla_fixture_is_what_its_script_makes_from_the_installed_kolla() -> None:
    version = importlib.metadata.version("kolla")
    if f"kolla {version} package" not in KOLLA_TREE.read_text().splitlines()[0]:
        pytest.skip(f"the fixture was made from another kolla than the installed {version}")
    made = subprocess.run([sys.executable, REPO / "scripts" / "kolla-tree"], check=True,
                          capture_output=True, text=True).stdout
    assert made == KOLLA_TREE.read_text()


def chain(parents: dict[str, str | None], name: str) -> list[str]:
    """Ancestors computed independently of Graph, by walking the mapping."""
    found = []
    while parents[name] is not None:
        name = parents[name]
        found.append(name)
    return found


def assert_parents_first(parents: dict[str, str | None], order: list[str]) -> None:
    assert sorted(order) == sorted(parents), "every image exactly once"
    position = {name: i for i, name in enumerate(order)}
    for name, parent in parents.items():
        if parent is not None:
            assert position[parent] < position[name], f"{parent} after its child {name}"


# --- errors ---------------------------------------------------------------------------------


def test_missing_parent() -> None:
    with pytest.raises(GraphError) as info:
        Graph.build({"base": None, "nova-api": "nova-base"})
    err = info.value
    assert err.image == "nova-api"
    assert "'nova-base'" in err.problem
    assert "nova-base" in err.fix


def test_self_parent() -> None:
    with pytest.raises(GraphError) as info:
        Graph.build({"base": None, "loop": "loop"})
    assert info.value.image == "loop"
    assert "loop -> loop" in info.value.problem
    assert "cycle" in info.value.problem


def test_two_cycle() -> None:
    with pytest.raises(GraphError) as info:
        Graph.build({"a": "b", "b": "a"})
    assert info.value.image in {"a", "b"}
    assert "a -> b -> a" in info.value.problem or "b -> a -> b" in info.value.problem


def test_three_cycle_names_every_member_and_no_other() -> None:
    parents = {"base": None, "x": "base", "d": "a", "a": "c", "b": "a", "c": "b"}
    with pytest.raises(GraphError) as info:
        Graph.build(parents)
    err = info.value
    assert err.image in {"a", "b", "c"}
    cycle = err.problem.partition(": ")[2].split(" -> ")
    assert set(cycle) == {"a", "b", "c"}
    assert cycle[0] == cycle[-1] == err.image
    assert len(cycle) == 4
    # each step of the reported cycle is a real parent link
    for child, parent in zip(cycle[1:], cycle[:-1], strict=True):
        assert parents[parent] == child or parents[child] == parent
    assert "parent: null" in err.fix


def test_graph_error_is_raised_before_any_use() -> None:
    """A valid graph builds; the same graph with one bad link does not."""
    assert Graph.build(SMALL).parents == SMALL
    with pytest.raises(GraphError):
        Graph.build({**SMALL, "base": "nova-api"})


# --- a small tree ---------------------------------------------------------------------------


@pytest.fixture
def small() -> Graph:
    return Graph.build(SMALL)


def test_order_small(small: Graph) -> None:
    assert_parents_first(SMALL, small.order())


def test_order_when_children_are_declared_first() -> None:
    reverse = dict(reversed(list(SMALL.items())))
    assert_parents_first(reverse, Graph.build(reverse).order())


def test_roots(small: Graph) -> None:
    assert small.roots() == ["base", "other-root"]


def test_children(small: Graph) -> None:
    children = small.children
    assert sorted(children["base"]) == ["cron", "openstack-base"]
    assert sorted(children["nova-base"]) == ["nova-api", "nova-conductor"]
    assert children["nova-api"] == []
    assert set(children) == set(SMALL)


def test_ancestors(small: Graph) -> None:
    assert list(small.ancestors("nova-api")) == ["nova-base", "openstack-base", "base"]
    assert list(small.ancestors("cron")) == ["base"]
    assert list(small.ancestors("base")) == []


def test_descendants(small: Graph) -> None:
    assert small.descendants("nova-base") == {"nova-api", "nova-conductor"}
    assert small.descendants("openstack-base") == {
        "nova-base", "nova-api", "nova-conductor", "neutron-base", "neutron-dhcp-agent"}
    assert small.descendants("base") == set(SMALL) - {"base", "other-root", "other-child"}
    assert small.descendants("nova-api") == set()
    assert small.descendants("other-root") == {"other-child"}


def test_levels(small: Graph) -> None:
    levels = [sorted(level) for level in small.levels()]
    assert levels == [["base", "other-root"],
                      ["cron", "openstack-base", "other-child"],
                      ["neutron-base", "nova-base"],
                      ["neutron-dhcp-agent", "nova-api", "nova-conductor"]]


def test_longest_path_remaining_and_chain(small: Graph) -> None:
    durations = dict.fromkeys(SMALL, 1.0) | {"neutron-dhcp-agent": 5.0, "cron": 7.0,
                                              "other-root": 2.0}
    path = small.longest_path(durations)
    assert path.remaining["nova-base"] == 2.0  # itself and one child
    assert path.remaining["neutron-base"] == 6.0
    assert path.remaining["openstack-base"] == 7.0
    assert path.remaining["base"] == 8.0  # cron's 7 ties openstack-base's 7
    assert path.remaining["other-root"] == 3.0
    assert path.chain == ["base", "cron"]  # a tie goes to the name first in sorting order
    assert path.length == 8.0


def test_longest_path_over_the_images_with_a_duration_only(small: Graph) -> None:
    path = small.longest_path({"nova-base": 1.0, "nova-api": 3.0, "nova-conductor": 2.0,
                               "cron": 3.5})
    assert path.remaining == {"nova-base": 4.0, "nova-api": 3.0, "nova-conductor": 2.0,
                              "cron": 3.5}
    assert path.chain == ["nova-base", "nova-api"]
    assert small.longest_path({}).chain == [] and small.longest_path({}).length == 0.0


# --- the kolla tree (188 images) ------------------------------------------------------------


def test_kolla_order(kolla: dict[str, str | None]) -> None:
    assert_parents_first(kolla, Graph.build(kolla).order())


def test_kolla_levels_and_longest_path(kolla: dict[str, str | None]) -> None:
    graph = Graph.build(kolla)
    levels = graph.levels()
    assert [len(level) for level in levels] == [1, 28, 54, 103, 2]
    assert all(len(chain(kolla, name)) == depth
               for depth, level in enumerate(levels) for name in level)
    path = graph.longest_path(dict.fromkeys(kolla, 1.0))
    assert path.length == 5.0 and len(path.chain) == 5
    assert path.chain[-1] in levels[4]


def test_kolla_roots(kolla: dict[str, str | None]) -> None:
    graph = Graph.build(kolla)
    assert graph.roots() == [name for name, parent in kolla.items() if parent is None]
    assert "base" in graph.roots()


def test_kolla_descendants_of_nova_base(kolla: dict[str, str | None]) -> None:
    graph = Graph.build(kolla)
    expected = {name for name in kolla if "nova-base" in chain(kolla, name)}
    found = graph.descendants("nova-base")
    assert found == expected
    assert {"nova-api", "nova-compute", "nova-conductor", "nova-scheduler"} <= found
    assert "nova-libvirt" not in found  # FROM base, not nova-base
    assert "nova-base" not in found


def test_kolla_descendants_of_base_is_everything_else(kolla: dict[str, str | None]) -> None:
    graph = Graph.build(kolla)
    rooted_at_base = {name for name in kolla if chain(kolla, name)[-1:] == ["base"]}
    assert graph.descendants("base") == rooted_at_base


def test_kolla_ancestors_and_children(kolla: dict[str, str | None]) -> None:
    graph = Graph.build(kolla)
    assert list(graph.ancestors("nova-api")) == ["nova-base", "openstack-base", "base"]
    for name in kolla:
        assert list(graph.ancestors(name)) == chain(kolla, name)
    children = graph.children
    assert sorted(children["nova-base"]) == sorted(
        name for name, parent in kolla.items() if parent == "nova-base")
    assert sum(len(kids) for kids in children.values()) == len(kolla) - len(graph.roots())


def test_kolla_with_a_cycle_added(kolla: dict[str, str | None]) -> None:
    with pytest.raises(GraphError) as info:
        Graph.build({**kolla, "base": "nova-api"})
    assert info.value.image in {"base", "openstack-base", "nova-base", "nova-api"}
    assert "nova-api" in info.value.problem


def test_select_takes_no_ancestor_of_a_pinned_image(small: Graph) -> None:
    from buildlib.graph import select

    chain_of_api = ["nova-api", "nova-base", "openstack-base", "base"]
    assert select(small, ["^nova-api$"], []).selected == set(chain_of_api)
    pinned = select(small, ["^nova-api$"], [], taken=frozenset({"nova-base"}))
    assert pinned.selected == {"nova-api", "nova-base"}
    assert pinned.parent_dependency(small, "nova-base") is None
    assert pinned.parent_dependency(small, "nova-api") == "nova-base"
