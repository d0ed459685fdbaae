#!/usr/bin/env bash
# Builds the static (musl) sidemount binary that goes into the sidemount image and
# is bind-mounted into volume-client containers, checks that it really is static,
# and prints its path as the last line of stdout; everything else goes to stderr:
#   bin=$(hack/build-static.sh | tail -1)
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib.sh

# Keep stdout for the result alone: fd 3 is the real stdout, and every step banner,
# cargo and rustup line goes to stderr.
exec 3>&1 1>&2

target=x86_64-unknown-linux-musl
bin=target/$target/release/sidemount

require_cargo
command -v rustup >/dev/null || die "rustup is missing: it adds the $target target"
# musl-gcc builds the C of the allocator (mimalloc) for the musl target.
install_packages file musl-tools

if ! timeout 60 rustup target list --installed | grep -qx "$target"; then
  step "rustup target add $target"
  timeout 600 rustup target add "$target"
fi

step "building the static sidemount ($target)"
timeout 1800 cargo build --locked --release --target "$target" --bin sidemount

# A musl binary from rustc is static-pie: file(1) says "static-pie linked" (or
# "statically linked"), and ldd says "not a dynamic executable" or "statically linked".
# Anything that names an interpreter or a shared library is not static.
info=$(timeout 30 file -b "$bin")
case $info in
  *"dynamically linked"* | *interpreter*) die "$bin is not static: $info" ;;
  *"static-pie linked"* | *"statically linked"*) ;;
  *) die "$bin: file(1) cannot tell whether it is static: $info" ;;
esac
libs=$(timeout 30 ldd "$bin" 2>&1 || true)
case $libs in
  *"not a dynamic executable"* | *"statically linked"*) ;;
  *) die "$bin is not static, ldd finds: $libs" ;;
esac

echo "static: $info"
echo "$bin" >&3
