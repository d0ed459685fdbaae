#!/usr/bin/env bash
# Benchmarks, never timed assertions: a tmpfs mount+umount forwarded through the
# helper and the daemon, against a direct mount(8)+umount(8) of the same filesystem,
# interleaved in one run in a mount and pid namespace of its own.
#   hack/bench.sh [ITERATIONS]     (default 200)
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib.sh
require_root
require_cargo
n=${1:-200}

step "building sidemount (release)"
cargo build --locked --release -q
bin=$PWD/target/release/sidemount

step "forwarded vs direct tmpfs mount+umount, $n rounds each, interleaved"
exec unshare --mount --pid --fork --mount-proc --propagation private -- bash -euc '
  bin=$1 n=$2
  work=$(mktemp -d /tmp/sidemount-bench.XXXXXX)
  # Whatever happens, nothing outlives the script: the tmpfs goes with this
  # namespace (-i: no helper, the daemon may be gone), and its directory here.
  trap "umount -i -R -l \"$work\" 2>/dev/null || true; rmdir \"$work\"" EXIT
  mount -t tmpfs sidemount-bench "$work"
  root=$work/var/lib/kubelet
  mkdir -p "$root/pods/direct" "$root/pods/helper" "$root/pods/mounter" "$work/helpers" "$work/run"
  "$bin" share "$root" >/dev/null
  "$bin" install-helpers --dir "$work/helpers" --types tmpfs >/dev/null
  mount -t overlay helpers -o "lowerdir=$work/helpers:/usr/sbin" /usr/sbin
  export SIDEMOUNT_SOCKET=$work/run/sidemount.sock
  "$bin" serve --socket "$SIDEMOUNT_SOCKET" --kubelet-root "$root" --state-dir "$work/run/state" 2>"$work/daemon.log" &
  daemon=$!
  for _ in $(seq 100); do [ -S "$SIDEMOUNT_SOCKET" ] && break; sleep 0.05; done
  direct=0 helper=0 mounter=0
  for i in $(seq "$n"); do
    t0=$EPOCHREALTIME
    mount -i -t tmpfs tmpfs "$root/pods/direct"; umount -i "$root/pods/direct"
    t1=$EPOCHREALTIME
    mount -t tmpfs tmpfs "$root/pods/helper"; umount "$root/pods/helper"
    t2=$EPOCHREALTIME
    "$bin" mount -t tmpfs tmpfs "$root/pods/mounter"; "$bin" umount "$root/pods/mounter"
    t3=$EPOCHREALTIME
    direct=$(( direct + ${t1/./} - ${t0/./} ))
    helper=$(( helper + ${t2/./} - ${t1/./} ))
    mounter=$(( mounter + ${t3/./} - ${t2/./} ))
  done
  awk -v d="$direct" -v h="$helper" -v m="$mounter" -v n="$n" "BEGIN {
    printf \"%-58s %8.2f ms\n\", \"direct: mount(8)+umount(8)\", d / n / 1000
    printf \"%-58s %8.2f ms  %5.2fx\n\", \"mounter path: sidemount mount/umount -> daemon -> mount(8)\", m / n / 1000, m / d
    printf \"%-58s %8.2f ms  %5.2fx\n\", \"helper path: mount(8) -> mount.tmpfs -> daemon -> mount(8)\", h / n / 1000, h / d
  }"
  kill "$daemon"; wait "$daemon" || true
' bench "$bin" "$n"
