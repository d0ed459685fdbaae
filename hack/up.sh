#!/usr/bin/env bash
# The main job on a fresh machine: build sidemount, then, in a mount namespace of
# its own, and pid 1 of a pid namespace of its own as the demo's host (nothing
# reaches the machine's table), share a demo kubelet root and show
# `check` failing before and passing after.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib.sh

require_root
require_cargo
install_packages util-linux mount

step "building sidemount"
cargo build --locked --release
bin=$PWD/target/release/sidemount

step "demo kubelet root in a private mount namespace"
exec unshare --mount --pid --fork --mount-proc --propagation private -- bash -euc '
  . hack/lib.sh
  bin=$1
  demo=$(mktemp -d /tmp/sidemount-demo.XXXXXX)
  mount -t tmpfs sidemount-demo "$demo"
  root=$demo/var/lib/kubelet
  mkdir -p "$root"
  step "check before share (expected to fail)"
  "$bin" check --kubelet-root "$root" || true
  step "sidemount share $root"
  "$bin" share "$root"
  step "check after share"
  "$bin" check --kubelet-root "$root"
  step "the demo root in the mount table"
  "$bin" list --target "$demo"
  umount -R "$demo"; rmdir "$demo"
' up "$bin"
