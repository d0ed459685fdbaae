#!/usr/bin/env bash
# The test command: installs what the tests need on a fresh Debian machine, then
# runs fmt, clippy and every test tier (unit, namespaces, docker) as root, where a
# skipped privileged test is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib.sh

require_root
require_cargo
export SIDEMOUNT_REQUIRE_ROOT=1 SIDEMOUNT_REQUIRE_DOCKER=1

install_packages util-linux mount e2fsprogs procps curl

step "cargo fmt --check"
cargo fmt --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --locked --all-targets -- -D warnings

step "tests"
if command -v cargo-nextest >/dev/null; then
  cargo nextest run --locked --no-fail-fast
else
  cargo test --locked --lib --bins --tests --no-fail-fast
fi
