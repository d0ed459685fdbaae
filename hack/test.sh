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

install_packages util-linux mount e2fsprogs procps curl openssh-server openssh-client

cleanup() {
  remove_test_leftovers
  stop_dockerd
}
trap cleanup EXIT

step "cargo fmt --check"
cargo fmt --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --locked --all-targets -- -D warnings

ensure_dockerd
# The agent the end-to-end tests inject is the static build, as on a node.
SIDEMOUNT_AGENT_BINARY="$PWD/$(hack/build-static.sh | tail -1)"
export SIDEMOUNT_AGENT_BINARY
hack/build-images.sh vcs-sshfs vcs-iscsi

step "tests"
if command -v cargo-nextest >/dev/null; then
  cargo nextest run --locked --no-fail-fast
else
  cargo test --locked --lib --bins --tests --no-fail-fast
fi
