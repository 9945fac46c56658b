# Shared helpers of the built-in toolchain skills (prepended to each skill's script).
# A built-in skill runs as `bash --noprofile --norc -c SCRIPT NAME`: $0 is the skill's name.
set -u
skill=$0

# Prints the message on stderr, records the error class and the message (the step's failure
# then reads `... failed: CLASS (exit code 1): MESSAGE`), exits 1.
fail() {
  local class=$1
  shift
  printf '%s\n' "$*" >&2
  if [ -n "${AGENT_OUTPUT:-}" ]; then
    printf 'error_class=%s\nerror_message=%s\n' "$class" "$*" >>"$AGENT_OUTPUT"
  fi
  exit 1
}

say() { printf '%s: %s\n' "$skill" "$*" >&2; }

# The first non-empty AGENT_PARAM_<NAME> among the names given.
param() {
  local n v
  for n in "$@"; do
    v=$(printenv "AGENT_PARAM_$n" || true)
    if [ -n "$v" ]; then
      printf '%s' "$v"
      return 0
    fi
  done
  return 0
}

need_protocol() {
  local v
  for v in AGENT_PATH AGENT_ENV AGENT_OUTPUT AGENT_TEMP; do
    if [ -z "$(printenv "$v" || true)" ]; then
      fail ValidationError "$skill: \$$v is not set: built-in skills run as steps of an agent workflow"
    fi
  done
}

add_path() { printf '%s\n' "$1" >>"$AGENT_PATH"; }
set_env() { printf '%s=%s\n' "$1" "$2" >>"$AGENT_ENV"; }
set_output() { printf '%s=%s\n' "$1" "$2" >>"$AGENT_OUTPUT"; }

# A requested version: digits and dots, a trailing `.x` and a leading `v` dropped.
normalize_version() {
  local v=$1
  v=${v#v}
  v=${v%.x}
  v=${v%.\*}
  printf '%s' "$v"
}

# Sets `wanted`: the first of the version parameters given, else the first word of the file
# named by a `version_file` parameter (`.python-version`, `.nvmrc`, `go.mod`'s `go` line),
# relative to the working directory. Not in a subshell: a bad file fails the step.
wanted_version() {
  local f
  wanted=$(param "$@")
  if [ -z "$wanted" ]; then
    f=$(param VERSION_FILE "${1}_FILE")
    if [ -n "$f" ]; then
      [ -f "$f" ] || fail ValidationError "$skill: the version file \`$f\` does not exist"
      case ${f##*/} in
        go.mod) wanted=$(awk '$1 == "go" { print $2; exit }' "$f") ;;
        *) wanted=$(grep -v '^[[:space:]]*#' "$f" | awk 'NF { print $1; exit }') ;;
      esac
      [ -n "$wanted" ] || fail ValidationError "$skill: the version file \`$f\` names no version"
    fi
  fi
}

is_version() { [[ $1 =~ ^[0-9]+(\.[0-9]+){0,2}$ ]]; }

# Whether installed version $2 satisfies the request $1 (equal, or $1 is a prefix at a dot).
version_matches() { [ "$2" = "$1" ] || [[ $2 == "$1".* ]]; }

# Reads lines, prints them sorted by version and without repeats, joined by ", ".
join_versions() {
  local out
  out=$(sort -V -u | paste -sd, - | sed 's/,/, /g')
  printf '%s' "${out:-none}"
}

# The first executable among the arguments (program names are looked up on PATH).
first_tool() {
  local c p
  for c in "$@"; do
    case $c in
      */*) [ -x "$c" ] && [ -f "$c" ] && { printf '%s' "$c"; return 0; } ;;
      *) p=$(command -v "$c" 2>/dev/null) && [ -n "$p" ] && { printf '%s' "$p"; return 0; } ;;
    esac
  done
  return 1
}

# The directories of PATH, each once, without version managers' shim directories.
path_dirs() {
  local d
  local IFS=:
  for d in $PATH; do
    case $d in '' | *shims* | */fnm_multishells/*) continue ;; esac
    printf '%s\n' "$d"
  done | awk '!seen[$0]++'
}

# A directory under AGENT_TEMP holding links to the given programs, for PATH: putting a system
# directory such as /usr/bin first on PATH would shadow everything else in it.
link_dir() {
  local name=$1
  shift
  local dir="$AGENT_TEMP/toolchains/$name/bin" f
  mkdir -p "$dir"
  for f in "$@"; do
    [ -e "$f" ] && ln -sf "$f" "$dir/$(basename "$f")"
  done
  printf '%s' "$dir"
}
