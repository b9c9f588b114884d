"""What a build may reach that is no content of its image: build secrets, SSH agents and
keys, the network of its RUN steps. None of it is in the key (as in `docker buildx bake`:
changing a secret rebuilds nothing); a secret's content is read by buildah alone, never by
imagebake, so it reaches no log, report or key."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from buildlib.config import Config, Secret
from buildlib.errors import InputError

SSH_AGENT = "SSH_AUTH_SOCK"  # where buildah finds the agent of `--ssh default`
FILE_SECRET_PREFIX = "IMAGEBAKE_SECRET_"
SSH_SECRET_PREFIX = "IMAGEBAKE_SSH_"  # an SSH entry's private key, in an exported job


@dataclass(frozen=True)
class Access:
    """One image's secrets (id -> where), SSH entries (as `buildah --ssh` takes them, ID
    -> the sockets or keys; none: the agent) and network (None: buildah's default)."""

    secrets: Mapping[str, Secret] = field(default_factory=dict)
    ssh: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    network: str | None = None

    def secret_sources(self, root: Path) -> dict[str, tuple[str, str]]:
        """id -> (`file`, its absolute path) or (`env`, the variable's name)."""
        return {secret_id: ("file", str(_path(root, secret.file))) if secret.file is not None
                else ("env", str(secret.env)) for secret_id, secret in self.secrets.items()}

    def ssh_sources(self, root: Path) -> list[str]:
        """Each SSH entry as `buildah --ssh` takes it, its paths made absolute."""
        return [f"{ssh_id}={','.join(str(_path(root, p)) for p in paths)}" if paths else ssh_id
                for ssh_id, paths in self.ssh.items()]

    def missing(self, root: Path) -> list[tuple[str, str]]:
        """(what is missing, the fix) for each secret or SSH source this run lacks."""
        found = []
        for secret_id, secret in self.secrets.items():
            if secret.env is not None and secret.env not in os.environ:
                found.append((f"secret '{secret_id}': environment variable {secret.env} is "
                              "not set", f"export {secret.env} before the run"))
            if secret.file is not None and not _path(root, secret.file).is_file():
                found.append((f"secret '{secret_id}': file {_path(root, secret.file)} does "
                              "not exist", "create it, or correct `file:` (relative to the "
                              "folder of images.yaml, `~` for your home)"))
        for ssh_id, paths in self.ssh.items():
            if not paths and not os.environ.get(SSH_AGENT):
                found.append((f"ssh '{ssh_id}': {SSH_AGENT} is not set (no SSH agent)",
                              f"start an agent (`eval $(ssh-agent)`, `ssh-add`), or give "
                              f"`{ssh_id}=PATH` of a socket or key"))
            found += [(f"ssh '{ssh_id}': {_path(root, p)} does not exist",
                       "correct the path (relative to the folder of images.yaml)")
                      for p in paths if not _path(root, p).exists()]
        return found


@dataclass(frozen=True, order=True)
class EngineSecret:
    """A secret as an exported workflow's job gets it: from the engine's secret store as
    the environment variable `variable` (GitHub `secrets.X`, a GitLab CI variable, a key of
    an Argo secret); a file secret's content is written to `file` before the build (`~/`:
    the job's home; else absolute, or relative to the repository's root). An `agent` one
    is an SSH private key the job adds to an agent of its own (`ssh: [default]`)."""

    variable: str
    file: str | None = None
    agent: bool = False


def engine_secrets(access: Access, config_dir: str) -> list[EngineSecret]:
    """What a job needs to build an image of this access (`config_dir`: the folder of
    images.yaml, relative to the repository's root). A file secret comes from the
    variable of its id in capitals after FILE_SECRET_PREFIX (`pip_conf`:
    IMAGEBAKE_SECRET_PIP_CONF, which no job's own variable is); an SSH entry's private key
    from SSH_SECRET_PREFIX and its id (`default`: IMAGEBAKE_SSH_DEFAULT, added to an agent;
    `deploy=k1,k2`: IMAGEBAKE_SSH_DEPLOY_1 and _2, written to k1 and k2)."""
    found = []
    for secret_id, secret in sorted(access.secrets.items()):
        if secret.env is not None:
            found.append(EngineSecret(secret.env))
            continue
        found.append(EngineSecret(FILE_SECRET_PREFIX + _variable_word(secret_id),
                                  _job_path(str(secret.file), config_dir)))
    for ssh_id, paths in sorted(access.ssh.items()):  # private keys, never agent sockets
        variable = SSH_SECRET_PREFIX + _variable_word(ssh_id)
        if not paths:
            found.append(EngineSecret(variable, agent=True))
        found += [EngineSecret(f"{variable}_{number}" if len(paths) > 1 else variable,
                               _job_path(path, config_dir))
                  for number, path in enumerate(paths, 1)]
    return found


def _variable_word(secret_id: str) -> str:
    return re.sub(r"\W", "_", secret_id).upper()


def _job_path(file: str, config_dir: str) -> str:
    """A path of images.yaml as a job takes it: `~/...` or absolute, else from the
    repository's root."""
    return file if file.startswith(("~/", "/")) else os.path.normpath(
        os.path.join(config_dir, file))


def access_of(cfg: Config, name: str) -> Access:
    """An image's access: settings' secrets and SSH entries, its own winning by id."""
    image, settings = cfg.images[name], cfg.settings
    return Access(secrets={**settings.secrets, **image.secrets},
                  ssh={**_ssh_entries(settings.ssh), **_ssh_entries(image.ssh)},
                  network=image.network)


def check(cfg: Config, accesses: Iterable[tuple[str, Access]]) -> None:
    """Raise InputError for the first image whose secrets or SSH sources this run lacks
    (before any build: a build without them fails late, or worse, runs without)."""
    for name, access in accesses:
        for problem, fix in access.missing(cfg.root)[:1]:
            raise InputError(cfg.path, problem, image=name, fix=fix)


def builds_images(tasks: Sequence[str]) -> bool:
    """Whether a run of these doit tasks may build an image (none: the default, `build`),
    and so needs its secrets (`resolve`, `prune`... do not: a CI job's step that publishes
    digests has none)."""
    return not tasks or any(task.partition(":")[0] in ("build", "push") for task in tasks)


def _ssh_entries(entries: list[str]) -> dict[str, tuple[str, ...]]:
    """`default` or `ID=PATH[,PATH]` as ID -> its paths."""
    split = (entry.partition("=") for entry in entries)
    return {ssh_id: tuple(p for p in paths.split(",") if p) for ssh_id, _, paths in split}


def _path(root: Path, value: str) -> Path:
    return root / os.path.expanduser(value)
