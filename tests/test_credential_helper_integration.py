"""A registry login kept by a docker-credential helper (`credHelpers` in the authfile) works
for imagebake's own requests as for buildah's push: a stub helper on PATH answers for a
registry with htpasswd auth."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Tree, make_tree, unmount_under
from registry import Registry

pytestmark = pytest.mark.integration

STUB = """#!/bin/sh
# docker-credential-stub: `get` reads a registry on stdin, answers with its login
read -r server
echo "$server" >> {asked}
if [ "$server" = "{address}" ]; then
  printf '{{"ServerURL": "%s", "Username": "{user}", "Secret": "{password}"}}' "$server"
else
  echo "credentials not found in native keychain"; exit 1
fi
"""


def stub_helper(bin_dir: Path, registry: Registry) -> Path:
    """Writes docker-credential-stub into `bin_dir`; the file it logs each asked registry to."""
    bin_dir.mkdir()
    asked = bin_dir / "asked.log"
    helper = bin_dir / "docker-credential-stub"
    helper.write_text(STUB.format(asked=asked, address=registry.address, user=registry.user,
                                  password=registry.password))
    helper.chmod(helper.stat().st_mode | stat.S_IXUSR)
    return asked


@pytest.fixture
def helper_machines(tmp_path: Path, auth_registry: Registry) -> Iterator[tuple[Tree, Tree]]:
    """Two machines, each with only a `credHelpers` login to the auth registry."""
    pair = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        tree = make_tree(tmp_path / name)
        (tree.root / "auth.json").write_text(
            json.dumps({"credHelpers": {auth_registry.address: "stub"}}))
        tree.edit_yaml(lambda data: data.update(images={"base": data["images"]["base"]}))
        tree.settings(registry=auth_registry.address, tls_verify=False, authfile="auth.json")
        pair.append(tree)
    yield pair[0], pair[1]
    unmount_under(tmp_path)


def test_a_credential_helper_login_serves_lookups_and_prune(
        helper_machines: tuple[Tree, Tree], auth_registry: Registry, tmp_path: Path) -> None:
    machine_a, machine_b = helper_machines
    asked = stub_helper(tmp_path / "bin", auth_registry)
    path = {"PATH": f"{tmp_path / 'bin'}:{machine_a.env['PATH']}"}
    machine_a.doit("push", env=path)
    assert auth_registry.digest("kolla/base", "latest") is not None

    machine_b.doit("build", "cache=registry", env=path)  # a lookup: found, not built
    assert machine_b.report()["images"]["base"]["found"] == "registry"
    assert auth_registry.address in asked.read_text().split()

    first = {t for t in auth_registry.tags("kolla/base") if t.startswith("ib-")}
    with (machine_a.root / "templates" / "base" / "set_configs.sh").open("a") as script:
        script.write("# edited\n")
    machine_a.doit("push", env=path)
    machine_a.doit("prune", "registry=1", env=path)  # lists tags, deletes the old key's
    left = {t for t in auth_registry.tags("kolla/base") if t.startswith("ib-")}
    assert len(left) == 1 and not left & first

    without = machine_b.doit("build", "cache=registry", check=False)  # no helper on PATH
    assert "docker-credential-stub" in without.stdout + without.stderr
