#!/usr/bin/env bash
# Benchmarks of the record, never timed assertions: the cost of a tmpfs
# mount+umount pair through the daemon (host executor) with 0, 1,000 and 10,000
# mounts recorded, and the time a restarted daemon takes to answer with as many,
# side by side in one run. The pairs are posted by one curl process, so no client
# process starts per request.
#   hack/bench-record.sh [PAIRS]     (default 300)
# Everything runs in a mount namespace of its own on a tmpfs, and goes with it.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib.sh

# pairs SOCKET TARGET N: N mount+unmount pairs on TARGET in one curl process; the
# mean per pair in microseconds.
pairs() {
  local socket=$1 target=$2 n=$3 args=() i t0 t1
  local api=(--next -sf --unix-socket "$socket" -o /dev/null -d)
  for ((i = 0; i < n; i++)); do
    args+=("${api[@]}" "{\"source\": \"tmpfs\", \"target\": \"$target\", \"fstype\": \"tmpfs\"}" http://sidemount/v1/mounts)
    args+=("${api[@]}" "{\"target\": \"$target\"}" http://sidemount/v1/unmounts)
  done
  t0=$EPOCHREALTIME
  curl --fail-early "${args[@]:1}"
  t1=$EPOCHREALTIME
  echo $(((${t1/./} - ${t0/./}) / n))
}

# fill SOCKET FROM TO: mounts (and records) volumes FROM..TO-1, 500 per curl.
fill() {
  local socket=$1 i=$2 to=$3 args=() t
  local api=(--next -sf --unix-socket "$socket" -o /dev/null -d)
  while ((i < to)); do
    args=()
    for ((; i < to && ${#args[@]} < 500 * 9; i++)); do
      t=$root/pods/fill/$i
      mkdir -p "$t"
      args+=("${api[@]}" "{\"source\": \"tmpfs\", \"target\": \"$t\", \"fstype\": \"tmpfs\", \"options\": [\"size=4k\"]}" http://sidemount/v1/mounts)
    done
    curl --fail-early "${args[@]:1}"
  done
}

# start: the daemon, in the background (its pid in $daemon); sets $elapsed to the
# microseconds until it answers a request that goes through the whole pipeline:
# an unmount of a target with nothing on it (404 not_mounted).
start() {
  local t0 t1
  t0=$EPOCHREALTIME
  "$bin" serve --socket "$socket" --kubelet-root "$root" --state-dir "$work/state" \
    >/dev/null 2>>"$work/daemon.log" &
  daemon=$!
  local probe=(-s -o /dev/null -w '%{http_code}' --unix-socket "$socket"
    -d "{\"target\": \"$root/pods/pairs\"}" http://sidemount/v1/unmounts)
  until [ "$(curl "${probe[@]}")" = 404 ]; do
    kill -0 "$daemon" 2>/dev/null || { tail -n 20 "$work/daemon.log" >&2; die "the daemon exited"; }
  done
  t1=$EPOCHREALTIME
  elapsed=$((${t1/./} - ${t0/./}))
}

# stop: kills the daemon at once, as a crash would.
stop() {
  kill -9 "$daemon"
  wait "$daemon" 2>/dev/null || true
}

# The measuring run, inside its own mount namespace.
if [ "${1:-}" = --inside ]; then
  bin=$2 n=$3
  mount --make-rprivate /
  work=$(mktemp -d /tmp/sidemount-bench-record.XXXXXX)
  mount -t tmpfs sidemount-bench "$work"
  root=$work/var/lib/kubelet socket=$work/run/sidemount.sock
  mkdir -p "$root/pods/pairs"
  "$bin" share "$root" >/dev/null
  printf '%-28s %16s %22s\n' "recorded mounts" "mount+umount" "restart to answer"
  have=0
  start
  for want in 0 1000 10000; do
    fill "$socket" "$have" "$want"
    have=$want
    # Warm up, then measure.
    pairs "$socket" "$root/pods/pairs" 20 >/dev/null
    pair=$(pairs "$socket" "$root/pods/pairs" "$n")
    # The restart with this many records: killed, then started again.
    stop
    start
    recorded=$(curl -sf --unix-socket "$socket" http://sidemount/v1/mounts | { grep -o '"mount_id"' || true; } | wc -l)
    [ "$recorded" = "$want" ] || die "$recorded mounts recorded after the restart, not $want"
    printf '%-28s %13.3f ms %19.1f ms\n' "$want" "$(bc -l <<<"$pair / 1000")" "$(bc -l <<<"$elapsed / 1000")"
  done
  stop
  # One lazy unmount detaches the whole tree at once (umount -R would read the
  # table again for each of the 10,000 mounts).
  umount -l "$work"
  rmdir "$work"
  exit
fi

require_root
require_cargo
n=${1:-300}
[[ $n =~ ^[1-9][0-9]*$ ]] || die "usage: hack/bench-record.sh [PAIRS]"
install_packages curl bc
bin=${SIDEMOUNT_BIN:-$PWD/$(bash hack/build-static.sh | tail -1)}
step "tmpfs mount+umount through the daemon, $n pairs, at 0, 1,000 and 10,000 recorded mounts; restart with each"
# A namespace of its own: the 10,000 mounts, the daemon (killed with it) and the
# scratch root go when it ends.
exec unshare --mount --pid --fork --kill-child --mount-proc -- bash "$0" --inside "$bin" "$n"
