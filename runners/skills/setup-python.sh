# setup-python: selects a Python, makes a virtualenv for the run and activates it for the later
# steps. Parameters: `version` (or `python-version`): `3.11`, `3.11.7`, `3`; `pip` (default
# true): false makes the virtualenv without pip, in a fraction of the time.
need_protocol
pip=$(param PIP)
case ${pip:-true} in
  true | 1 | yes) pip=true ;;
  false | 0 | no) pip=false ;;
  *) fail ValidationError "$skill: \`pip\` is true or false, not \`$pip\`" ;;
esac
wanted_version PYTHON_VERSION VERSION
want=$(normalize_version "$wanted")
[ -n "$want" ] || fail ValidationError "$skill: the parameter \`version\` (or \`version_file\`) is required, e.g. \`parameters: {version: \"3.12\"}\`"
is_version "$want" || fail ValidationError "$skill: \`$want\` is not a Python version such as 3.12 or 3.12.1 (write it quoted: 3.10 unquoted is the number 3.1)"

uv=$(first_tool uv "$HOME/.local/bin/uv" "$HOME/.cargo/bin/uv") || uv=
pyenv_root=${PYENV_ROOT:-$HOME/.pyenv}
pyenv=$(first_tool pyenv "$pyenv_root/bin/pyenv") || pyenv=

# Candidates, one per line: VERSION<TAB>INTERPRETER<TAB>SOURCE, in order of preference.
candidates() {
  local line name path v d p
  if [ -n "$uv" ]; then
    # uv's own installs (`uv python install`); the rest of the machine is searched below.
    d=$("$uv" python dir 2>/dev/null) || d=
    for p in ${d:+"$d"/cpython-*}; do
      v=${p##*/cpython-}
      v=${v%%-*}
      [[ $v =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || continue
      [ -x "$p/bin/python3" ] && printf '%s\t%s\tuv\n' "$v" "$p/bin/python3"
    done
  fi
  if [ -d "$pyenv_root/versions" ]; then
    for d in "$pyenv_root"/versions/*; do
      v=${d##*/}
      [[ $v =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || continue
      for p in "$d/bin/python3" "$d/bin/python"; do
        if [ -x "$p" ]; then
          printf '%s\t%s\tpyenv\n' "$v" "$p"
          break
        fi
      done
    done
  fi
  path_dirs | while read -r d; do
    for p in "$d"/python3 "$d"/python3.[0-9]*; do
      case $p in *-config | *m) continue ;; esac
      [ -x "$p" ] && [ -f "$p" ] || continue
      v=$("$p" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null) || continue
      printf '%s\t%s\tsystem\n' "$v" "$(readlink -f "$p")"
    done
  done
}

all=$(candidates | awk -F'\t' '!seen[$2]++')
chosen=$(printf '%s\n' "$all" | awk -F'\t' -v want="$want" \
  '$1 == want || index($1, want ".") == 1 { print NR "\t" $0 }' |
  sort -t"$(printf '\t')" -k2,2Vr -k1,1n | head -n1 | cut -f2-)

if [ -z "$chosen" ]; then
  installed=$(printf '%s\n' "$all" | awk -F'\t' 'NF { split($1, p, "."); print p[1] "." p[2] }' | join_versions)
  if [ -n "$uv" ]; then
    hint="uv python install $want"
  elif [ -n "$pyenv" ]; then
    hint="pyenv install $want"
  else
    hint="uv python install $want"
  fi
  fail ToolchainNotInstalled "python $want is not installed; installed: $installed; install it with \`$hint\`"
fi

IFS=$'\t' read -r version python source <<<"$chosen"
venv=$(mktemp -d "$AGENT_TEMP/venv-python$version-XXXXXX")
say "Python $version from $source ($python); virtualenv $venv"
if [ "$pip" = false ]; then
  "$python" -m venv --without-pip "$venv" >&2 ||
    fail ToolchainNotInstalled "$skill: Python $version ($python) cannot make a virtualenv (no \`venv\` module)"
elif ! "$python" -m venv "$venv" >&2 2>/dev/null; then
  # Debian's system Python has no ensurepip without python3-venv: a virtualenv without pip
  # still isolates the run.
  "$python" -m venv --without-pip "$venv" >&2 ||
    fail ToolchainNotInstalled "$skill: Python $version ($python) cannot make a virtualenv (no \`venv\` module)"
  say "the virtualenv has no pip: Python $version has no ensurepip (on Debian: apt-get install python3-venv)"
fi
[ -x "$venv/bin/python" ] || fail ToolchainNotInstalled "$skill: the virtualenv $venv has no bin/python"

add_path "$venv/bin"
set_env VIRTUAL_ENV "$venv"
set_env pythonLocation "$(dirname "$(dirname "$python")")"
set_output python-version "$version"
set_output python-path "$venv/bin/python"
set_output venv "$venv"
set_output manager "$source"
