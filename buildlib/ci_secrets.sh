# How a CI job (exported by `imagebake export`) writes its file secrets before its build:
# `sh "$IMAGEBAKE_DIR/buildlib/ci_secrets.sh"`. IMAGEBAKE_SECRET_FILES holds one
# `VARIABLE=FILE` a line; each variable, from the engine's secret store, holds a secret's
# content, which goes to its file (`~/...`: in the home folder; else absolute, or relative
# to the repository's root, where the job runs), readable by the job's user alone. Nothing
# is printed but a missing variable's name.
set -eu
printf '%s\n' "${IMAGEBAKE_SECRET_FILES:-}" | while IFS='=' read -r variable file; do
  [ -n "$variable" ] || continue
  case "$variable" in
    *[!A-Za-z0-9_]*) echo "error: $variable is not a variable name" >&2; exit 1 ;;
  esac
  eval "value=\${$variable:-}"
  if [ -z "$value" ]; then
    echo "error: the secret $variable is not set or empty: add it to the CI's secrets" \
         "(it is written to $file for the build)" >&2
    exit 1
  fi
  case "$file" in "~/"*) file="$HOME/${file#"~/"}" ;; esac
  mkdir -p "$(dirname "$file")"
  (umask 077 && printf '%s' "$value" > "$file")
done
