# How a CI job (exported by `imagebake export`) gives its build an SSH agent (`ssh:
# [default]` in images.yaml), sourced by the job's shell before the build:
# `. "$IMAGEBAKE_DIR/buildlib/ci_ssh.sh"`. IMAGEBAKE_SSH_KEYS names the variables, from the
# engine's secret store, that hold the private keys; an agent of the job's own holds them
# (SSH_AUTH_SOCK, which the build forwards) and ends with the job's shell. Nothing is
# printed but a missing variable's name.
for variable in ${IMAGEBAKE_SSH_KEYS:-}; do
  case "$variable" in
    *[!A-Za-z0-9_]*) echo "error: $variable is not a variable name" >&2; exit 1 ;;
  esac
  eval "value=\${$variable:-}"
  if [ -z "$value" ]; then
    echo "error: the secret $variable is not set or empty: add it to the CI's secrets" \
         "(the private key of the build's SSH agent)" >&2
    exit 1
  fi
done
if ! command -v ssh-agent >/dev/null; then
  echo "error: ssh-agent is missing on the runner: install openssh-client" >&2
  exit 1
fi
eval "$(ssh-agent -s)" >/dev/null
trap 'ssh-agent -k >/dev/null 2>&1' EXIT
for variable in ${IMAGEBAKE_SSH_KEYS:-}; do
  eval "printf '%s\n' \"\${$variable}\"" | ssh-add - 2>/dev/null || {
    echo "error: the secret $variable holds no private key ssh-add takes" >&2; exit 1; }
done
unset value variable
