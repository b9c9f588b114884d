"""buildlib.dockerfile reads every Dockerfile as buildah 1.28 does: compared with buildah's
own parser (openshift/imagebuilder 1.2.3, Go, built here from Debian's package of it, the one
Debian's buildah is built with) on hand-made edge cases and every Dockerfile that
`kolla-build --template-only` renders for two Kolla releases."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import REPO
from test_kolla import BIN, kolla_build_output, older_kolla_bin, start_kolla_build

from buildlib import dockerfile

PARITY = Path(__file__).parent / "parity"
GOPATH = Path("/usr/share/gocode")
IMAGEBUILDER = GOPATH / "src/github.com/openshift/imagebuilder/dockerfile/parser"


@pytest.fixture(scope="session")
def buildah_reader() -> Path:
    """The Go program that prints how buildah's parser reads files (built once)."""
    if shutil.which("go") is None or not IMAGEBUILDER.is_dir():
        pytest.skip("needs golang-go and golang-github-openshift-imagebuilder-dev (make setup)")
    out = REPO / "build" / "parity" / "dump"
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["go", "build", "-o", str(out), str(PARITY / "dump.go")], check=True,
                   env={"GO111MODULE": "off", "GOPATH": str(GOPATH), "PATH": "/usr/bin:/bin",
                        "GOCACHE": str(out.parent / "gocache"), "HOME": str(out.parent)},
                   timeout=300)
    return out


def as_buildah_prints(text: str) -> dict:
    """What dump.go prints for one file, from buildlib.dockerfile's reading."""
    try:
        parsed = dockerfile.parse(text)
    except dockerfile.DockerfileError as err:
        return {"error": str(err)}
    return {"escape": parsed.escape,
            "instructions": [_printed(i) for i in parsed.instructions]}


def _printed(instruction: dockerfile.Instruction) -> dict:
    printed = {"cmd": instruction.keyword, "flags": list(instruction.flags),
               "args": list(instruction.args), "json": instruction.json,
               "start": instruction.start, "end": instruction.end}
    if instruction.trigger is not None:
        printed["sub"] = _printed(instruction.trigger)
    return printed


def disagreements(reader: Path, paths: list[Path]) -> dict[str, tuple[dict, dict]]:
    """Each file whose reading differs: (buildah's, ours); errors agree when both fail."""
    theirs = {}
    for start in range(0, len(paths), 200):
        batch = paths[start:start + 200]
        printed = subprocess.run([str(reader), *map(str, batch)], capture_output=True,
                                 check=True, timeout=120).stdout
        theirs.update(json.loads(printed))
    found = {}
    for path in paths:
        ours = as_buildah_prints(path.read_bytes().decode("utf-8"))
        their = theirs[str(path)]
        if ("error" in ours) != ("error" in their) or ("error" not in ours and ours != their):
            found[str(path)] = (their, ours)
    return found


def test_edge_cases_read_as_buildah_reads_them(buildah_reader: Path) -> None:
    cases = sorted((PARITY / "cases").iterdir())
    assert len(cases) >= 14
    assert disagreements(buildah_reader, cases) == {}


@pytest.mark.slow
@pytest.mark.real  # buildah's own parser over 764 Dockerfiles: make test-real (CI runs it)
@pytest.mark.parametrize("release", ["current", "21.3.0"])
def test_every_kolla_dockerfile_read_as_buildah_reads_it(
        buildah_reader: Path, tmp_path: Path, release: str) -> None:
    bin_dir = BIN if release == "current" else older_kolla_bin()
    (tmp_path / "empty.conf").write_text("", encoding="utf-8")
    paths = []
    for distro in ("debian", "rocky"):
        process, work = start_kolla_build(tmp_path, bin_dir, (release, distro, False))
        kolla_build_output(process, work)
        paths += sorted((work / "docker").rglob("Dockerfile"))
    assert len(paths) > 300
    found = disagreements(buildah_reader, paths)
    print(f"kolla {release}: {len(paths) - len(found)} of {len(paths)} Dockerfiles read "
          "as buildah reads them")
    assert found == {}
