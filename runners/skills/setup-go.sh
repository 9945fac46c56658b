# setup-go: selects a Go toolchain and puts it first on PATH for the later steps.
# Parameters: `version` (or `go-version`): `1.22`, `1.22.3`.
# An installed Go that matches wins; otherwise a Go of 1.21 or later switches toolchains
# itself through GOTOOLCHAIN (which downloads the wanted one through the module proxy).
need_protocol
wanted_version GO_VERSION VERSION
want=$(normalize_version "$wanted")
want=${want#go}
[ -n "$want" ] || fail ValidationError "$skill: the parameter \`version\` (or \`version_file\`) is required, e.g. \`parameters: {version: \"1.22\"}\`"
is_version "$want" || fail ValidationError "$skill: \`$want\` is not a Go version such as 1.22 or 1.22.3"

# Candidates, one per line: VERSION<TAB>GOROOT_BIN.
candidates() {
  local p v root
  {
    path_dirs | while read -r d; do printf '%s\n' "$d/go"; done
    printf '%s\n' /usr/local/go/bin/go "$HOME/go/bin/go" "$HOME"/sdk/go*/bin/go /usr/lib/go-*/bin/go /usr/lib/go/bin/go
  } | while read -r p; do
    [ -x "$p" ] && [ -f "$p" ] || continue
    v=$(GOTOOLCHAIN=local "$p" env GOVERSION 2>/dev/null) || continue
    root=$(GOTOOLCHAIN=local "$p" env GOROOT 2>/dev/null) || continue
    v=${v#go}
    printf '%s\t%s\n' "${v%% *}" "$root/bin"
  done
}

all=$(candidates | awk -F'\t' '!seen[$2]++')
installed=$(printf '%s\n' "$all" | awk -F'\t' 'NF { print $1 }' | join_versions)
chosen=$(printf '%s\n' "$all" | awk -F'\t' -v want="$want" \
  '$1 == want || index($1, want ".") == 1 { print NR "\t" $0 }' |
  sort -t"$(printf '\t')" -k2,2Vr -k1,1n | head -n1 | cut -f2-)

if [ -n "$chosen" ]; then
  IFS=$'\t' read -r version bin <<<"$chosen"
  say "Go $version ($bin/go)"
  add_path "$bin"
  set_env GOTOOLCHAIN local
  set_output go-version "$version"
  set_output go-path "$bin/go"
  exit 0
fi

# The toolchain switch: the newest Go here that knows it (1.21 or later).
switcher=$(printf '%s\n' "$all" | awk -F'\t' 'NF { split($1, p, "."); if (p[1] > 1 || (p[1] == 1 && p[2] >= 21)) print $0 }' |
  sort -t"$(printf '\t')" -k1,1Vr | head -n1)
if [ -n "$switcher" ]; then
  IFS=$'\t' read -r _ bin <<<"$switcher"
  target=$want
  [[ $target =~ ^[0-9]+\.[0-9]+$ ]] && target=$target.0
  if version=$(GOTOOLCHAIN="go$target" "$bin/go" env GOVERSION 2>&1); then
    version=${version#go}
    say "Go $version through GOTOOLCHAIN=go$target ($bin/go)"
    add_path "$bin"
    set_env GOTOOLCHAIN "go$target"
    set_output go-version "$version"
    set_output go-path "$bin/go"
    exit 0
  fi
  say "GOTOOLCHAIN=go$target: $version"
  fail ToolchainNotInstalled "go $want is not installed; installed: $installed; install it with \`GOTOOLCHAIN=go$target go version\`"
fi
fail ToolchainNotInstalled "go $want is not installed; installed: $installed; install it with \`apt-get install golang-go\` or from https://go.dev/dl/"
