#!/usr/bin/env bash
# The test command: installs what the tests need on a fresh Debian machine (apt
# packages, dockerd, the images), then runs fmt, clippy and every test tier (unit,
# namespaces, docker) as root, where a skipped privileged test is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib.sh
. hack/docker.sh

require_root
require_cargo
export SIDEMOUNT_REQUIRE_ROOT=1 SIDEMOUNT_REQUIRE_DOCKER=1

install_packages util-linux mount e2fsprogs xfsprogs btrfs-progs procps curl openssh-server openssh-client python3 iproute2

# yamllint and kubernetes-validate check manifests/ offline (tests/manifests.rs);
# they live in a virtualenv under target/, on PATH for the tests only.
venv=$PWD/target/python-tools
if [ ! -x "$venv/bin/kubernetes-validate" ] || [ ! -x "$venv/bin/yamllint" ]; then
  python3 -m venv "$venv" 2>/dev/null || { install_packages python3-venv && python3 -m venv "$venv"; }
  step "installing yamllint and kubernetes-validate into $venv"
  timeout 600 "$venv/bin/pip" install -q yamllint==1.38.0 kubernetes-validate==1.37.0
fi
export PATH=$venv/bin:$PATH

cleanup() {
  remove_test_leftovers
  stop_dockerd
}
trap cleanup EXIT

step "cargo fmt --check"
timeout 300 cargo fmt --check

step "cargo clippy --all-targets -- -D warnings"
timeout 2400 cargo clippy --locked --all-targets -- -D warnings

ensure_dockerd
# The agent the end-to-end tests inject is the static build, as on a node.
SIDEMOUNT_AGENT_BINARY="$PWD/$(hack/build-static.sh | tail -1)"
export SIDEMOUNT_AGENT_BINARY
hack/build-images.sh vcs-sshfs vcs-iscsi kubelet-node

step "tests"
if command -v cargo-nextest >/dev/null; then
  timeout 3000 cargo nextest run --locked --no-fail-fast
else
  timeout 3000 cargo test --locked --lib --bins --tests --no-fail-fast
fi

step "quick start: hack/up.sh and hack/down.sh, twice in a row"
for round in 1 2; do
  timeout 900 bash hack/up.sh
  timeout 600 bash hack/down.sh
  echo "round $round: up and down passed"
done
# Nothing of the demo is left: no root, no containers, no VCS container.
. hack/demo.sh
[ ! -e "$demo_dir" ] || die "hack/down.sh left $demo_dir"
left=$(timeout 30 docker ps -aq --filter "label=$demo_label")$(timeout 30 docker ps -aq --filter "name=^$demo_vcs_container\$")
[ -z "$left" ] || die "hack/down.sh left containers: $left"

# Last, the VM node tier: a Debian VM with its own kernel runs a node against real
# NFS and iSCSI servers (about 25 minutes from nothing under TCG on two busy cores;
# less once its image and tarballs are cached under target/vm). On its deadline it
# stops its qemu by pid and removes what it made (its EXIT trap).
step "the VM node tier: hack/test-vm.sh"
timeout 2700 bash hack/test-vm.sh
