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

# wait_until SECONDS CMD...: runs CMD (quietly) every 0.2 s until it succeeds;
# returns 1 when SECONDS pass first.
wait_until() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}

# free_port: a TCP port in 20000-59999 that no socket of this machine uses.
free_port() {
  local port hex
  for _ in $(seq 1 100); do
    port=$((20000 + RANDOM % 40000))
    hex=$(printf ':%04X ' "$port")
    grep -qF "$hex" /proc/net/tcp /proc/net/tcp6 2>/dev/null || { echo "$port"; return 0; }
  done
  die "no free TCP port found"
}

# pid_runs PID PATTERN: PID is alive and its command line contains PATTERN (so a
# pid file whose process is gone, its pid now reused, is not taken for it).
pid_runs() {
  [ -n "$1" ] && [ -r "/proc/$1/cmdline" ] && tr '\0' ' ' <"/proc/$1/cmdline" | grep -qF -- "$2"
}

# pid_alive PID: PID exists and is not a zombie.
pid_alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [ "${stat%% *}" != Z ]
}

pid_gone() { ! pid_alive "$1"; }

# stop_pid PID PATTERN: SIGTERM to PID if pid_runs PID PATTERN, SIGKILL after 20 s.
stop_pid() {
  pid_runs "$1" "$2" || return 0
  kill "$1" 2>/dev/null || return 0
  wait_until 20 pid_gone "$1" && return 0
  kill -9 "$1" 2>/dev/null || true
  wait_until 10 pid_gone "$1" || true
}

# apt_source_files: this machine's apt sources, one file a line (a one-line .list or
# deb822 .sources each), as mmdebstrap takes them: with no mirror argument it would
# use deb.debian.org rather than this machine's sources. mmdebstrap copies each into
# the new root's /etc/apt, so apt inside it uses the same sources.
apt_source_files() {
  local f found=
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -s "$f" ] && { echo "$f"; found=1; }
  done
  [ -n "$found" ] || die "no apt sources in /etc/apt/sources.list{,.d/}"
}
