#!/usr/bin/env bash
# The main job on a fresh machine: build sidemount, share a demo kubelet root, start
# the daemon with its embedded default configuration, and mount a demo volume the
# way a containerized kubelet does (mount(8) -> mount.tmpfs helper -> daemon),
# verified in every namespace. All of it runs in a mount and pid namespace of its
# own (pid 1 there is the demo's host), so the machine's real /var/lib/kubelet and
# mount table are never touched, and everything ends with the script.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib.sh

require_root
require_cargo
install_packages util-linux mount curl

step "building sidemount"
cargo build --locked --release
bin=$PWD/target/release/sidemount

exec unshare --mount --pid --fork --mount-proc --propagation private -- bash -euc '
  . hack/lib.sh
  bin=$1
  demo=$(mktemp -d /tmp/sidemount-demo.XXXXXX)
  # Whatever happens, nothing outlives the script: the tmpfs goes with this
  # namespace (-i: no helper, the daemon may be gone), and its directory here.
  trap "umount -i -R -l \"$demo\" 2>/dev/null || true; rmdir \"$demo\"" EXIT
  mount -t tmpfs sidemount-demo "$demo"
  root=$demo/var/lib/kubelet
  run=$demo/run/sidemount
  mkdir -p "$root" "$run" "$demo/helpers"

  step "check before share (expected to fail: the kubelet root is not shared)"
  "$bin" check --kubelet-root "$root" || true

  step "sidemount share $root"
  "$bin" share "$root"

  step "check after share"
  "$bin" check --kubelet-root "$root"

  step "starting the daemon (embedded default configuration)"
  export SIDEMOUNT_SOCKET=$run/sidemount.sock
  "$bin" serve --socket "$SIDEMOUNT_SOCKET" --kubelet-root "$root" --state-dir "$run/state" \
    2>"$demo/daemon.log" &
  daemon=$!
  for _ in $(seq 100); do curl -sf --unix-socket "$SIDEMOUNT_SOCKET" http://sidemount/v1/status >/dev/null && break; sleep 0.1; done
  curl -sf --unix-socket "$SIDEMOUNT_SOCKET" http://sidemount/v1/status; echo

  step "a containerized kubelet: its own mount namespace, the kubelet root rshared, helpers installed"
  "$bin" install-helpers --dir "$demo/helpers" --types tmpfs
  unshare --mount --propagation unchanged -- sh -c "
    mount -t overlay helpers -o lowerdir=$demo/helpers:/usr/sbin /usr/sbin
    exec sleep 1000000" &
  kubelet=$!
  sleep 0.3
  vol=$root/pods/demo-pod/volumes/kubernetes.io~empty-dir/cache
  mkdir -p "$vol"

  step "the kubelet runs: mount -t tmpfs -o size=8m tmpfs $vol"
  nsenter -t "$kubelet" -m -- mount -v -t tmpfs -o size=8m tmpfs "$vol"
  nsenter -t "$kubelet" -m -- sh -c "echo written by the kubelet > $vol/hello"

  step "where the mount is visible"
  printf "%-34s %-8s %-12s %s\n" NAMESPACE MOUNT PROPAGATION "CONTENT OF hello"
  for ns in "host:1" "daemon:$daemon" "kubelet container:$kubelet"; do
    name=${ns%%:*} pid=${ns##*:}
    line=$("$bin" list --pid "$pid" --target "$vol" --output json |
      python3 -c "import json,sys; f=json.load(sys.stdin)[\"filesystems\"]; print(\"%s %s\" % (f[-1][\"id\"], f[-1][\"propagation\"]) if f else \"- missing\")")
    content=$(nsenter -t "$pid" -m -- cat "$vol/hello" 2>/dev/null || echo "-")
    printf "%-34s %-8s %-12s %s\n" "$name (pid $pid)" ${line} "$content"
  done

  step "the kubelet runs: umount $vol"
  nsenter -t "$kubelet" -m -- umount -v "$vol"
  "$bin" list --target "$root/pods"
  curl -sf --unix-socket "$SIDEMOUNT_SOCKET" http://sidemount/v1/mounts; echo

  step "stopping the daemon and the demo"
  kill "$kubelet" "$daemon"; wait "$daemon" || true
  echo "done: nothing is left mounted, running or written outside the demo namespaces"
' up "$bin"
