# setup-node: selects a Node.js and puts it first on PATH for the later steps.
# Parameters: `version` (or `node-version`): `20`, `20.11`, `20.11.1`.
need_protocol
wanted_version NODE_VERSION VERSION
want=$(normalize_version "$wanted")
[ -n "$want" ] || fail ValidationError "$skill: the parameter \`version\` (or \`version_file\`) is required, e.g. \`parameters: {version: \"20\"}\`"
is_version "$want" || fail ValidationError "$skill: \`$want\` is not a Node.js version such as 20 or 20.11.1"

fnm_dir=${FNM_DIR:-}
if [ -z "$fnm_dir" ]; then
  for d in "${XDG_DATA_HOME:-$HOME/.local/share}/fnm" "$HOME/.fnm"; do
    [ -d "$d" ] && { fnm_dir=$d; break; }
  done
fi
fnm=$(first_tool fnm ${fnm_dir:+"$fnm_dir/fnm"} "$HOME/.cargo/bin/fnm") || fnm=
nvm_dir=${NVM_DIR:-$HOME/.nvm}
nvm=
[ -s "$nvm_dir/nvm.sh" ] && nvm=$nvm_dir/nvm.sh

# Candidates, one per line: VERSION<TAB>BIN_DIR<TAB>SOURCE, in order of preference.
candidates() {
  local d v p
  if [ -n "$fnm_dir" ] && [ -d "$fnm_dir/node-versions" ]; then
    for d in "$fnm_dir"/node-versions/v*; do
      v=${d##*/v}
      [ -x "$d/installation/bin/node" ] && printf '%s\t%s\tfnm\n' "$v" "$d/installation/bin"
    done
  fi
  if [ -d "$nvm_dir/versions/node" ]; then
    for d in "$nvm_dir"/versions/node/v*; do
      v=${d##*/v}
      [ -x "$d/bin/node" ] && printf '%s\t%s\tnvm\n' "$v" "$d/bin"
    done
  fi
  path_dirs | while read -r d; do
    for p in "$d/node" "$d/nodejs"; do
      [ -x "$p" ] && [ -f "$p" ] || continue
      v=$("$p" --version 2>/dev/null) || continue
      v=${v#v}
      printf '%s\t%s\tsystem\n' "$v" "$p"
      break
    done
  done
}

all=$(candidates | awk -F'\t' '$1 ~ /^[0-9]+\.[0-9]+\.[0-9]+$/ && !seen[$2]++')
chosen=$(printf '%s\n' "$all" | awk -F'\t' -v want="$want" \
  '$1 == want || index($1, want ".") == 1 { print NR "\t" $0 }' |
  sort -t"$(printf '\t')" -k2,2Vr -k1,1n | head -n1 | cut -f2-)

if [ -z "$chosen" ]; then
  installed=$(printf '%s\n' "$all" | awk -F'\t' 'NF { print $1 }' | join_versions)
  if [ -n "$fnm" ]; then
    hint="fnm install $want"
  elif [ -n "$nvm" ]; then
    hint="nvm install $want"
  else
    hint="fnm install $want"
  fi
  fail ToolchainNotInstalled "node $want is not installed; installed: $installed; install it with \`$hint\`"
fi

IFS=$'\t' read -r version where source <<<"$chosen"
if [ "$source" = system ]; then
  # A system install lives among other programs: link node and its tools into a directory
  # of their own rather than putting e.g. /usr/bin first.
  dir=$(dirname "$where")
  tools=("$where")
  for t in npm npx corepack; do
    [ -x "$dir/$t" ] && tools+=("$dir/$t")
  done
  bin=$(link_dir "node-$version" "${tools[@]}")
  [ -e "$bin/node" ] || ln -sf "$where" "$bin/node"
  node=$where
else
  bin=$where
  node=$where/node
fi
say "Node.js $version from $source ($node)"
add_path "$bin"
set_output node-version "$version"
set_output node-path "$node"
set_output manager "$source"
