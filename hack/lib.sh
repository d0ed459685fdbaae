# Shared by the hack/ scripts: step banners, root check, and package installs that
# touch apt only when something is missing.

step() { printf '\n==> %s\n' "$*"; }

die() { printf 'error: %s\n' "$*" >&2; exit 1; }

require_root() {
  [ "$(id -u)" = 0 ] || die "run as root: sidemount mounts, unshares namespaces and runs dockerd"
}

# install_packages PKG...: apt-get install the Debian packages that are not installed.
install_packages() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  step "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  timeout 600 apt-get update -q
  timeout 1200 apt-get install -y -q --no-install-recommends "${missing[@]}"
}

require_cargo() {
  command -v cargo >/dev/null || die "cargo is missing: install the Rust toolchain (rustup) first"
}
