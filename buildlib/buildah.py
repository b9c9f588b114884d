"""The only module that starts buildah: one function per buildah verb, argument lists only.
It runs them through processes.py and reads the storage's own files through
storage_format.py."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from buildlib import storage_format
from buildlib.processes import (
    CommandError,
    Interrupted,
    StopControl,
    command_line,
    kill_groups_of,
    run_logged,
)
from buildlib.storage_format import (
    StorageContents,
    StoredImage,
    image_id,
    read_image_store,
    read_storage_contents,
)

BUILDAH = "buildah"
PUSH_FORMATS = {"docker": "v2s2", "oci": "oci"}
# A build arg no Dockerfile declares: it does not shape the image (buildah warns that it
# was not consumed) but buildah records it in the working container, which tells our
# leftovers from other users' containers in a shared storage.
OWNER_ARG = "IMAGEBAKE_OWNER"
# ... and which build of the tree: its iidfile, one per image (a multi-arch image's
# platforms build one after another), so that a failed build removes its own container.
BUILD_ARG = "IMAGEBAKE_BUILD"
RMI_BATCH = 500  # names per `buildah rmi`: well within the limit of one command line


class StorageError(Exception):
    """Local storage cannot be listed (a wrong --root, broken storage, no buildah)."""


# What callers catch: a buildah command failed or ran out of time (raised by the runner).
BuildahError = CommandError


def bud_options(tags: Sequence[str], *, fmt: str, timestamp: int | None,
                isolation: str | None, args: Mapping[str, str],
                volumes: Sequence[str], platform: str | None = None,
                layer_cache: bool = True, target: str | None = None,
                contexts: Mapping[str, str] | None = None) -> list[str]:
    """The options of `buildah bud` that shape the image (everything but paths).
    `--timestamp` and no identity label make it reproducible: the same inputs on the
    same parent give the same image ID in any storage.

    Without `layer_cache`, `--no-cache`: every step runs, and the image has the same
    layers, so the same ID, as a build that found nothing in the cache.

    An image for a named platform is built without the layer cache: buildah 1.28's cache
    does not tell platforms apart (after a `FROM scratch` build for linux/amd64, one for
    linux/arm64 took the cached amd64 steps and came out amd64), and without intermediate
    images its build leaves no step for a native build to take either."""
    layers = (["--platform", platform, "--layers=false"] if platform else
              ["--layers"] if layer_cache else ["--layers", "--no-cache"])
    options = ["--format", fmt, *layers, "--identity-label=false"]
    if timestamp is not None:
        options += ["--timestamp", str(timestamp)]
    for tag in tags:
        options += ["--tag", tag]
    if isolation:
        options += ["--isolation", isolation]
    for key, value in sorted(args.items()):
        options += ["--build-arg", f"{key}={value}"]
    for volume in volumes:
        options += ["--volume", volume]
    if target is not None:
        options += ["--target", target]
    for name, value in sorted((contexts or {}).items()):
        options += ["--build-context", f"{name}={value}"]
    return options


def access_options(secrets: Mapping[str, tuple[str, str]], ssh: Sequence[str],
                   network: str | None) -> list[str]:
    """The options of `buildah bud` that give RUN steps what is no content of the image:
    secrets (id -> (`file`, path) or (`env`, variable): only where, never the value, is on
    the command line, which is logged), SSH agents and keys, the network."""
    options = []
    for secret_id, (kind, source) in sorted(secrets.items()):
        options += ["--secret", f"id={secret_id},src={source}"
                    + (",type=env" if kind == "env" else "")]
    for entry in ssh:
        options += ["--ssh", entry]
    return options + (["--network", network] if network else [])


# What decides where buildah keeps its images, besides its global args.
STORAGE_ENVIRONMENT = ("CONTAINERS_STORAGE_CONF", "STORAGE_DRIVER", "STORAGE_OPTS", "HOME",
                       "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_RUNTIME_DIR")
STORAGE_CONFS = ("/etc/containers/storage.conf", "/usr/share/containers/storage.conf",
                 "~/.config/containers/storage.conf")


def _store_question(global_args: Sequence[str]) -> list:
    """Everything that could change where the storage lives: if this is unchanged, so is
    the answer `buildah info` gave."""
    confs = []
    for conf in (*STORAGE_CONFS, os.environ.get("CONTAINERS_STORAGE_CONF", "")):
        try:
            stat = os.stat(os.path.expanduser(conf))
            confs.append([conf, stat.st_mtime_ns, stat.st_size])
        except OSError:
            confs.append([conf, None])
    return [list(global_args), os.getuid(), [os.environ.get(v) for v in STORAGE_ENVIRONMENT],
            confs]


def _push_options(fmt: str, digestfile: Path, tls_verify: bool,
                  authfile: Path | None) -> list[str]:
    """The options `buildah push` and `buildah manifest push` share."""
    options = ["--format", PUSH_FORMATS[fmt], "--digestfile", str(digestfile),
               f"--tls-verify={str(tls_verify).lower()}"]
    return options + (["--authfile", str(authfile)] if authfile is not None else [])


class Built(NamedTuple):
    """What one `buildah bud` made, and the CPU seconds it took."""

    id: str
    cpu_seconds: float


@dataclass(frozen=True)
class Buildah:
    global_args: tuple[str, ...] = ()
    # Where the storage's own image list was found for these global args (a file this
    # tool may write; None: always ask `buildah images`).
    store_note: Path | None = None
    # The run's stop request, which every command it runs heeds.
    stop: StopControl = field(default_factory=StopControl, compare=False)

    def argv(self, *args: str) -> list[str]:
        return [BUILDAH, *self.global_args, *args]

    def bud_argv(self, options: Sequence[str], dockerfile: Path, context_dir: Path,
                 iidfile: Path, *, pull: str, owner: str) -> list[str]:
        return self.argv("bud", *options, f"--pull={pull}", "--build-arg",
                         f"{OWNER_ARG}={owner}", "--build-arg", f"{BUILD_ARG}={iidfile}",
                         "--iidfile", str(iidfile),
                         "-f", str(dockerfile), str(context_dir))

    def bud(self, argv: Sequence[str], iidfile: Path, log: Path, timeout: float,
            note: str = "", echo: bool = False, append: bool = False) -> Built:
        """Run a `bud_argv` command with its output in `log` (after what it holds, when
        `append`)."""
        iidfile.unlink(missing_ok=True)
        try:
            cpu_seconds = run_logged(argv, log, timeout, stop=self.stop, note=note, echo=echo,
                                     append=append)
        except Interrupted:
            raise  # the run is ending: its next run removes what is left (the killed mark)
        except BuildahError as err:
            # buildah keeps a failed build's working container, mounted (a killed one too)
            with contextlib.suppress(subprocess.SubprocessError, OSError, ValueError,
                                     KeyError):
                self.remove_containers(BUILD_ARG, str(iidfile))
            said = "" if err.timed_out else error_line(err.output)
            if not said:
                raise
            # the report's error: buildah's `Error: ...` line, which the exit code is not
            raise BuildahError(f"{err.reason}: {said}", err.log, err.output) from None
        return Built(image_id(iidfile.read_text()), cpu_seconds)

    def manifest_create(self, name: str, images: Sequence[str]) -> str:
        """A manifest list named `name` of these images (each listed under the platform
        its config names); return the list's ID in storage."""
        out = subprocess.run(self.argv("manifest", "create", name, *images), check=True,
                             capture_output=True, text=True, stdin=subprocess.DEVNULL).stdout
        return image_id(out.strip().splitlines()[-1])

    def push_argv(self, reference: str, destination: str, *, fmt: str, digestfile: Path,
                  tls_verify: bool, authfile: Path | None) -> list[str]:
        # --retry 0: the caller retries with its own policy. (buildah 1.28 still retries
        # a dropped or refused connection 3 times within one push, and says so in the log.)
        options = _push_options(fmt, digestfile, tls_verify, authfile)
        return self.argv("push", *options, "--retry", "0", reference, f"docker://{destination}")

    def manifest_push_argv(self, reference: str, destination: str, *, fmt: str,
                           digestfile: Path, tls_verify: bool,
                           authfile: Path | None) -> list[str]:
        """`buildah manifest push --all`: the manifest list and every image it lists (it
        has no --retry: the caller retries)."""
        options = _push_options(fmt, digestfile, tls_verify, authfile)
        return self.argv("manifest", "push", "--all", *options, reference,
                         f"docker://{destination}")

    def push(self, argv: Sequence[str], digestfile: Path, log: Path, timeout: float) -> str:
        """Run a `push_argv` or `manifest_push_argv` command, its output appended to
        `log`; return the digest."""
        digestfile.unlink(missing_ok=True)
        run_logged(argv, log, timeout, stop=self.stop, append=True)
        return digestfile.read_text().strip()

    def images(self) -> dict[str, set[str]]:
        """Every image in local storage: ID -> its names. Read from the storage's own list
        of images when it can be found (no process, and no image sizes computed: ten to
        a hundred times faster), else from one `buildah images`."""
        listing = read_image_store(self._image_store())
        return listing if listing is not None else self.list_images()

    def list_images(self) -> dict[str, set[str]]:
        """Every image in local storage: ID -> its names (one buildah process)."""
        argv = self.argv("images", "--json", "--no-trunc")
        try:
            out = subprocess.run(argv, check=True, capture_output=True, text=True,
                                 stdin=subprocess.DEVNULL).stdout
        except subprocess.CalledProcessError as err:
            said = error_line(err.stderr) or f"exit code {err.returncode}"
            raise StorageError(f"`{command_line(argv)}` failed: {said}") from None
        except OSError as err:
            raise StorageError(f"cannot run buildah: {err}") from None
        return {image_id(entry["id"]): set(entry.get("names") or [])
                for entry in json.loads(out or "[]")}

    def _image_store(self) -> Path | None:
        """The file in which containers/storage lists its images (`<graph
        root>/<driver>-images/images.json`), as `buildah info` names it, remembered in
        `store_note` for as long as nothing that could move it changes."""
        if self.store_note is None:
            return None
        asked = _store_question(self.global_args)
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            note = json.loads(self.store_note.read_text())
            if note["asked"] == asked:
                return Path(note["store"]) if note["store"] else None
        store = self._find_image_store()
        if store is not False:  # remembered: where it is, or that it cannot be read
            with contextlib.suppress(OSError):
                scratch = self.store_note.with_name(self.store_note.name + ".new")
                scratch.write_text(json.dumps({"asked": asked, "store": store and str(store)}))
                scratch.replace(self.store_note)
        return store or None

    def graph_root(self) -> Path | None:
        """The folder of this storage (`buildah info`'s GraphRoot), or None when buildah
        cannot say."""
        store = self._image_store()
        if store is not None:
            return storage_format.graph_root(store)
        try:
            out = subprocess.run(self.argv("info"), check=True, capture_output=True,
                                 text=True, stdin=subprocess.DEVNULL, timeout=60).stdout
            return Path(json.loads(out)["store"]["GraphRoot"])
        except (OSError, subprocess.SubprocessError, ValueError, KeyError, TypeError):
            return None

    def _find_image_store(self) -> Path | None | bool:
        """Ask `buildah info` where the image list is; None when that file does not list
        every image buildah counts (extra read-only stores), False when buildah failed
        (not remembered: `buildah images` will say why)."""
        try:
            out = subprocess.run(self.argv("info"), check=True, capture_output=True,
                                 text=True, stdin=subprocess.DEVNULL, timeout=60).stdout
            store = json.loads(out)["store"]
            path = storage_format.images_file(Path(store["GraphRoot"]), store["GraphDriverName"])
            count = store["ImageStore"]["number"]
        except (OSError, subprocess.SubprocessError, ValueError, KeyError, TypeError):
            return False
        if count == 0 and not path.exists():
            return path  # a storage no image was stored in yet: buildah makes the file
        listing = read_image_store(path)
        return path if listing is not None and len(listing) == count else None

    def tag(self, image: str, *names: str) -> None:
        """Give an image in storage more names (no build, no copy)."""
        subprocess.run(self.argv("tag", image, *names), check=True, capture_output=True,
                       stdin=subprocess.DEVNULL)

    def pull(self, reference: str, *, tls_verify: bool, authfile: Path | None,
             timeout: float, anew: bool = False) -> str:
        """Pull `reference` (by digest: exactly that image) into storage, unless storage
        holds it already or, `anew`, whatever storage holds; return its ID."""
        options = [f"--tls-verify={str(tls_verify).lower()}", "--quiet",
                   f"--policy={'always' if anew else 'missing'}"]
        if authfile is not None:
            options += ["--authfile", str(authfile)]
        argv = self.argv("pull", *options, reference)
        try:
            out = subprocess.run(argv, check=True, capture_output=True, text=True,
                                 stdin=subprocess.DEVNULL, timeout=timeout).stdout
        except subprocess.CalledProcessError as err:
            raise BuildahError(f"`{command_line(argv)}` failed: {error_line(err.stderr)}",
                               output=err.stderr) from None
        except subprocess.TimeoutExpired:
            raise BuildahError(f"`{command_line(argv)}` timed out after {timeout:g} s") from None
        return image_id(out.strip().splitlines()[-1])

    def untag(self, name: str) -> None:
        """Take one name off an image that has others."""
        subprocess.run(self.argv("rmi", name), check=True, capture_output=True,
                       stdin=subprocess.DEVNULL)

    def manifest_platform_ids(self, reference: str) -> dict[str | None, str | None]:
        """`os/arch[/variant]` -> the ID of the image in storage that a manifest list lists
        for it (by its digest)."""
        listed = json.loads(subprocess.run(
            self.argv("manifest", "inspect", reference), check=True, capture_output=True,
            text=True, stdin=subprocess.DEVNULL).stdout)
        images = json.loads(subprocess.run(
            self.argv("images", "--json", "--no-trunc"), check=True, capture_output=True,
            text=True, stdin=subprocess.DEVNULL).stdout or "[]")
        by_digest = {entry.get("digest"): image_id(entry["id"]) for entry in images}
        found: dict[str | None, str | None] = {}
        for entry in listed.get("manifests") or []:
            platform = entry.get("platform") or {}
            name = "/".join(part for part in (platform.get("os"), platform.get("architecture"),
                                              platform.get("variant")) if part)
            found[name] = by_digest.get(entry["digest"])
        return found

    def onbuild_triggers(self, reference: str) -> list[str] | None:
        """The ONBUILD instructions in an image's config, which a build FROM it runs first
        (only the Docker format keeps them); None when storage has no such image."""
        done = subprocess.run(self.argv("inspect", "--type", "image", reference),
                              capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            return None
        config = (json.loads(done.stdout).get("Docker") or {}).get("config") or {}
        return list(config.get("OnBuild") or [])

    def manifest_images(self, reference: str) -> list[str]:
        """The IDs of the images in storage that a manifest list lists."""
        return [i for i in self.manifest_platform_ids(reference).values() if i]

    def manifest_rm(self, *names: str) -> None:
        """Remove a manifest list by all its names (not the images it lists; `rmi` of a
        list's ID would remove the image it lists for this machine's platform instead)."""
        subprocess.run(self.argv("manifest", "rm", *names), check=True,
                       capture_output=True, stdin=subprocess.DEVNULL)

    def remove_names(self, *names: str) -> None:
        """Take these names off their images (`buildah rmi NAME`, no --force): an image
        whose last name goes is removed; one with other names keeps them."""
        subprocess.run(self.argv("rmi", *names), check=True, capture_output=True,
                       text=True, stdin=subprocess.DEVNULL)

    def contents(self) -> StorageContents:
        """Every image with its top layer, every layer with its size, and the images that
        working containers use, from the storage's own files; else (extra read-only
        stores, files it cannot read) the images alone, from `buildah images`."""
        store = self._image_store()
        contents = read_storage_contents(store) if store is not None else None
        if contents is not None:
            return contents
        return StorageContents({i: StoredImage(i, frozenset(names), None, False)
                                for i, names in self.list_images().items()},
                               {}, frozenset(), complete=False)

    def remove(self, *names_or_ids: str) -> list[str]:
        """`buildah rmi` without --force (an image a container uses stays, and so does one
        with dependent images); every name or ID is tried. Returns buildah's error lines."""
        errors: list[str] = []
        for start in range(0, len(names_or_ids), RMI_BATCH):
            batch = names_or_ids[start:start + RMI_BATCH]
            done = subprocess.run(self.argv("rmi", *batch), capture_output=True, text=True,
                                  stdin=subprocess.DEVNULL)
            if done.returncode != 0:
                errors += [line.strip().removeprefix("* ")
                           for line in done.stderr.splitlines() if line.strip().startswith("*")]
                errors += [] if errors else [error_line(done.stderr)]
        return errors

    def remove_lists(self, *names: str) -> list[str]:
        """`buildah manifest rm` of manifest lists by name (the images they list stay)."""
        errors = []
        for name in names:
            done = subprocess.run(self.argv("manifest", "rm", name), capture_output=True,
                                  text=True, stdin=subprocess.DEVNULL)
            if done.returncode != 0:
                errors.append(f"{name}: {error_line(done.stderr)}")
        return errors

    def remove_containers_of(self, owner: str) -> int:
        """Remove the working containers of builds run with our OWNER_ARG (a killed run's
        leftovers, with their mounts); return how many."""
        return self.remove_containers(OWNER_ARG, owner)

    def remove_containers(self, arg: str, value: str) -> int:
        """Remove the working containers of builds run with `--build-arg arg=value`;
        return how many."""
        listed = subprocess.run(self.argv("containers", "--json"), check=True,
                                capture_output=True, text=True, stdin=subprocess.DEVNULL)
        containers = json.loads(listed.stdout or "[]")
        if not containers:
            return 0
        store = json.loads(subprocess.run(self.argv("info"), check=True, capture_output=True,
                                          text=True, stdin=subprocess.DEVNULL).stdout)["store"]
        root, driver = Path(store["GraphRoot"]), store["GraphDriverName"]
        ours = [c["id"] for c in containers
                if storage_format.read_build_args(root, driver, c["id"]).get(arg) == value]
        if ours:
            subprocess.run(self.argv("rm", *ours), check=True, capture_output=True,
                           stdin=subprocess.DEVNULL)
        return len(ours)


def error_line(output: str) -> str:
    """What buildah said went wrong, in one line: the last of `error_lines`."""
    return (error_lines(output) or [""])[-1]


# What buildah prints while it copies: never the reason it failed.
PROGRESS_LINE = re.compile(r"^(Getting image source signatures|Copying (blob|config) |"
                           r"Writing manifest|Storing signatures|\$ |# )")


def error_lines(output: str) -> list[str]:
    """buildah's `Error: ...` lines in `output`, or else its last line that is not
    progress (`Copying blob ...`) nor our own notes; at most one of each."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = list(dict.fromkeys(line for line in lines if line.startswith("Error:")))
    if errors:
        return errors
    return [line for line in lines if not PROGRESS_LINE.match(line)][-1:]


def kill_orphans(owner: str) -> int:
    """SIGKILL the process groups of buildah processes still running with our OWNER_ARG
    (a killed run's builds go on in their own sessions); return how many groups."""
    return kill_groups_of(f"{OWNER_ARG}={owner}")
