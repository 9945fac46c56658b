# rust-toolchain: selects a Rust toolchain through rustup for the later steps (RUSTUP_TOOLCHAIN).
# Parameters: `toolchain` (or `version`): `stable`, `nightly`, `1.95.0`; none: the toolchain
# rustup picks in the workspace (its rust-toolchain.toml, else the default).
# `components`, `targets`: lists (or comma-separated names) installed when missing.
need_protocol
params_json=$(cat)
want=$(param TOOLCHAIN VERSION)
want=${want#v}
if [ -n "$want" ] && ! [[ $want =~ ^[A-Za-z0-9._-]+$ ]]; then
  fail ValidationError "$skill: \`$want\` is not a toolchain name such as stable, nightly or 1.95.0"
fi
cargo_bin=${CARGO_HOME:-$HOME/.cargo}/bin
rustup=$(first_tool rustup "$cargo_bin/rustup") || rustup=

if [ -z "$rustup" ]; then
  # No rustup: a system rustc (Debian's) serves when it is the version asked for.
  rustc=$(first_tool rustc) || rustc=
  have=
  [ -n "$rustc" ] && have=$("$rustc" --version 2>/dev/null | awk '{ print $2 }')
  if [ -n "$have" ] && { [ -z "$want" ] || [ "$want" = stable ] || version_matches "$want" "$have"; }; then
    say "rustc $have ($rustc), no rustup"
    set_output toolchain "$have"
    set_output rustc-version "$have"
    exit 0
  fi
  fail ToolchainNotInstalled "rust ${want:-stable} is not installed; installed: ${have:-none}; install it with \`curl --proto '=https' -sSf https://sh.rustup.rs | sh -s -- --default-toolchain ${want:-stable}\`"
fi

host_names=$("$rustup" toolchain list 2>/dev/null | awk '{ print $1 }' | grep -v '^no$' || true)
short() { sed -E 's/-(x86_64|aarch64|i686|armv7|arm|riscv64gc|powerpc64le|s390x|loongarch64)-.*$//'; }
if [ -z "$want" ]; then
  name=$("$rustup" show active-toolchain 2>/dev/null | awk '{ print $1 }')
  [ -n "$name" ] || fail ToolchainNotInstalled "rust: no toolchain is active; installed: $(printf '%s\n' "$host_names" | short | join_versions); install it with \`rustup toolchain install stable\`"
else
  name=$(printf '%s\n' "$host_names" | while read -r n; do
    s=$(printf '%s\n' "$n" | short)
    if [ "$n" = "$want" ] || [ "$s" = "$want" ]; then printf '%s\n' "$n"; fi
  done | head -n1)
  if [ -z "$name" ]; then
    name=$(printf '%s\n' "$host_names" | short | while read -r s; do
      version_matches "$want" "$s" && printf '%s\n' "$s"
    done | sort -Vr | head -n1)
  fi
  if [ -z "$name" ]; then
    installed=$(printf '%s\n' "$host_names" | short | grep -v '^$' | join_versions)
    fail ToolchainNotInstalled "rust $want is not installed; installed: $installed; install it with \`rustup toolchain install $want\`"
  fi
fi
rustc_version=$(RUSTUP_TOOLCHAIN=$name "$rustup" run "$name" rustc --version 2>&1) ||
  fail ToolchainNotInstalled "rust $name does not run: $rustc_version; install it with \`rustup toolchain install $name\`"

# A list parameter (`[clippy, rustfmt]`, or one comma-separated string): lists are not scalar
# parameters, so they are read from the parameters' JSON on stdin.
list_param() {
  local v
  v=$(param "$1")
  if [ -z "$v" ]; then
    v=$(grep -o "\"$2\":\\[[^]]*\\]" <<<"$params_json" | sed "s/^\"$2\"://")
  fi
  printf '%s' "$v" | tr -d '[]" ' | tr ',' ' '
}

components=$(list_param COMPONENTS components)
if [ -n "$components" ]; then
  have=$("$rustup" component list --installed --toolchain "$name" 2>/dev/null | short)
  for c in $components; do
    if ! printf '%s\n' "$have" | grep -qx -- "$c"; then
      say "installing component $c of $name"
      "$rustup" component add --toolchain "$name" "$c" >&2 ||
        fail ToolchainNotInstalled "rust component $c of $name is not installed; install it with \`rustup component add --toolchain $name $c\`"
    fi
  done
fi
targets=$(list_param TARGETS targets)
if [ -n "$targets" ]; then
  have=$("$rustup" target list --installed --toolchain "$name" 2>/dev/null)
  for t in $targets; do
    if ! printf '%s\n' "$have" | grep -qx -- "$t"; then
      say "installing target $t of $name"
      "$rustup" target add --toolchain "$name" "$t" >&2 ||
        fail ToolchainNotInstalled "rust target $t of $name is not installed; install it with \`rustup target add --toolchain $name $t\`"
    fi
  done
fi

say "$rustc_version (toolchain $name)"
add_path "$(dirname "$rustup")"
set_env RUSTUP_TOOLCHAIN "$name"
set_output toolchain "$name"
set_output rustc-version "$(printf '%s' "$rustc_version" | awk '{ print $2 }')"
