# How a CI job (exported by `imagebake export`) installs imagebake, sourced by the job's
# shell from the checkout: `. "$IMAGEBAKE_DIR/buildlib/ci_install.sh"`, with IMAGEBAKE_DIR
# the checkout's path in the repository (and optionally IMAGEBAKE_STORAGE, IMAGEBAKE_CACHE).
#
# It runs on any runner: a fresh GitHub-hosted one (a user with sudo), a self-hosted one or
# act on a host (root without sudo, packages already there, jobs side by side), a container
# (root). apt runs only for missing packages, one apt at a time on a host: apt fails at once
# on its lock when another job holds it (no option waits). The virtualenv holds the
# dependencies only, with the extras IMAGEBAKE_EXTRAS names (the source runs from the
# checkout, through PYTHONPATH), so it is keyed by pyproject.toml and those extras alone, and
# made once per runner under RUNNER_TOOL_CACHE (which persists
# on self-hosted runners and act), and linked as `.venv`: a fresh runner makes it in about
# 7 s (pip installs uv, uv the rest), a runner that has it takes 0.05 s. buildah's storage:
# the runner's default (IMAGEBAKE_STORAGE unset or `runner`), one of the job's own (`job`),
# or a folder the runner's jobs share; the job's later steps find it through
# CONTAINERS_STORAGE_CONF.
set -eu
missing=""
packages="buildah busybox-static python3-venv"
[ -z "${IMAGEBAKE_SSH_AGENT:-}" ] || packages="$packages openssh-client"  # ci_ssh.sh's agent
for package in $packages; do
  dpkg -s "$package" >/dev/null 2>&1 || missing="$missing $package"
done
if [ -n "$missing" ]; then
  sudo=""
  if [ "$(id -u)" != 0 ]; then
    if ! command -v sudo >/dev/null; then
      echo "error: Debian packages missing:$missing (no sudo to install them: install them" \
        "on the runner)" >&2
      exit 1
    fi
    sudo=sudo
  fi
  # shellcheck disable=SC2086  # $missing: one word per package
  $sudo flock /var/lock/imagebake-apt.lock sh -c \
    'apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"' \
    apt-get $missing
fi
cache="${IMAGEBAKE_CACHE:-${RUNNER_TOOL_CACHE:-${HOME:-/tmp}/.cache}/imagebake}"
extras="${IMAGEBAKE_EXTRAS:-}"  # pyproject.toml's extras the tree needs (sign, sbom, kolla)
pinned="${IMAGEBAKE_PINNED:-}"  # what the export pinned (kolla==23.0.0)
venv="$cache/venv-$(sha256sum < "$IMAGEBAKE_DIR/pyproject.toml" | cut -c1-16)"
for extra in $extras; do venv="$venv-$extra"; done
[ -z "$pinned" ] || venv="$venv-$(printf '%s' "$pinned" | sha256sum | cut -c1-8)"
mkdir -p "$cache"
(
  flock 9
  if [ ! -e "$venv/ready" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    # shellcheck disable=SC2086  # $extras: one word per extra
    python3 -c 'import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
wanted = [*project["dependencies"], *(requirement for extra in sys.argv[2:]
          for requirement in project["optional-dependencies"][extra])]
print("\n".join(wanted))' "$IMAGEBAKE_DIR/pyproject.toml" $extras > "$venv/requirements.txt"
    for requirement in $pinned; do echo "$requirement" >> "$venv/requirements.txt"; done
    # uv installs them in under a second where pip takes 20 s; pip if uv cannot
    "$venv/bin/pip" install -q uv && VIRTUAL_ENV="$venv" "$venv/bin/uv" pip install -q \
      -r "$venv/requirements.txt" || "$venv/bin/pip" install -q -r "$venv/requirements.txt"
    touch "$venv/ready"
  fi
) 9> "$cache/lock"
ln -sfn "$venv" .venv
storage="${IMAGEBAKE_STORAGE:-runner}"
if [ "$storage" != runner ]; then
  [ "$storage" != job ] || storage="${RUNNER_TEMP:-$PWD/.imagebake}/buildah-storage"
  conf="${RUNNER_TEMP:-$PWD/.imagebake}/storage.conf"
  mkdir -p "$storage" "$(dirname "$conf")"
  printf '[storage]\ndriver = "overlay"\ngraphroot = "%s/root"\nrunroot = "%s/run"\n' \
    "$storage" "$storage" > "$conf"
  export CONTAINERS_STORAGE_CONF="$conf"
  if [ -n "${GITHUB_ENV:-}" ]; then echo "CONTAINERS_STORAGE_CONF=$conf" >> "$GITHUB_ENV"; fi
fi
