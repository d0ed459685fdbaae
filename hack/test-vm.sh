#!/usr/bin/env bash
# The VM node tier: a Debian VM with its own kernel (qemu TCG) runs a node as
# operators run it (dockerd, sidemount serve, the VCS containers, a kubelet
# container) against real NFS and iSCSI servers, and the kubelet's calls end to end.
#
#   hack/test-vm.sh        build what changed (cached under target/vm), boot, test
#
# What is built once and kept under target/vm, rebuilt only when its inputs change:
#   root.img, vmlinuz, initrd.img  mmdebstrap bookworm + hack/vm/rootfs, as ext4
#   images.tar                     docker save of the VCS and kubelet-node images
# Each run: a bundle disk (a tar of hack/vm/ and the static sidemount) and an empty
# results disk are attached beside the root image (snapshot=on: never changed); the
# VM runs the node test at boot (hack/vm/node-test.sh), writes its results as a tar
# onto the results disk and powers off. Every step has a deadline; qemu is stopped by
# pid; nothing is left outside target/vm.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib.sh
. hack/docker.sh

require_root
require_cargo
install_packages mmdebstrap qemu-system-x86 e2fsprogs python3

vm=$PWD/target/vm
run=$vm/run
mkdir -p "$vm"
# The images the node runs, built by hack/build-images.sh: those the node needs
# first, and the big ones only `sidemount run` uses, loaded in the background.
images=(vcs-nfs vcs-iscsi kubelet-node)
extra_images=(vcs-glusterfs vcs-ceph)
# How long the VM may run, and how long the test inside it may run.
vm_deadline=${SIDEMOUNT_VM_DEADLINE:-2400}
test_deadline=$((vm_deadline - 180))

# The node: no NFS or iSCSI client in its root filesystem (nfs-kernel-server needs
# nfs-common, whose mount.nfs/umount.nfs helpers dpkg leaves out; open-iscsi is not
# installed), docs and locales left out to keep the image small.
packages=(
  linux-image-cloud-amd64 systemd systemd-sysv udev kmod apparmor
  util-linux mount e2fsprogs procps iproute2 netbase jq
  docker.io nfs-kernel-server tgt
)
root_recipe=(
  mmdebstrap --mode=root --format=directory --variant=minbase
  --aptopt='APT::Install-Recommends "false"'
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*'
  --dpkgopt='path-exclude=/usr/share/locale/*'
  --dpkgopt='path-exclude=/sbin/mount.nfs*' --dpkgopt='path-exclude=/sbin/umount.nfs*'
  --dpkgopt='path-exclude=/usr/sbin/mount.nfs*' --dpkgopt='path-exclude=/usr/sbin/umount.nfs*'
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
  "--include=$(IFS=,; echo "${packages[*]}")"
  bookworm
)

# remove_rootfs: the half-made root of an interrupted mmdebstrap, whose /proc, /sys
# or /dev mounts it may have left: unmounted first, and rm stays on its filesystem.
remove_rootfs() {
  local dir=$vm/rootfs.tmp
  [ -e "$dir" ] || return 0
  findmnt -rn -o TARGET | grep -F "$dir/" | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf --one-file-system "$dir"
}

qemu_pid=
cleanup() {
  [ -z "$qemu_pid" ] || stop_pid "$qemu_pid" qemu-system-x86_64
  remove_rootfs
  rm -rf "$vm/tmp"
  stop_dockerd
}
trap cleanup EXIT

# build_root_image: target/vm/root.img (+ vmlinuz, initrd.img), when its inputs changed.
build_root_image() {
  local hash sources rootfs=$vm/rootfs.tmp size start
  mapfile -t sources < <(apt_source_files)
  [ ${#sources[@]} -gt 0 ] || die "no apt sources"
  hash=$({
    printf '%s\n' "${root_recipe[@]}"
    for f in "${sources[@]}"; do printf '== %s\n' "$f"; cat "$f"; done
    (cd hack/vm/rootfs && find . -print0 | LC_ALL=C sort -z | xargs -0 stat -c '%n %a %N' && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
  } | sha256sum | cut -d' ' -f1)
  if [ -f "$vm/root.img" ] && [ "$(cat "$vm/root.inputs" 2>/dev/null)" = "$hash" ]; then
    step "VM root image: up to date"
    return
  fi
  step "building the VM root image (mmdebstrap: ${packages[*]})"
  start=$SECONDS
  remove_rootfs
  rm -f "$vm/root.img" "$vm/root.inputs"
  if ! timeout 1800 "${root_recipe[@]}" "$rootfs" "${sources[@]}" >"$vm/mmdebstrap.log" 2>&1; then
    tail -n 30 "$vm/mmdebstrap.log" >&2
    die "mmdebstrap of the VM root failed (log: $vm/mmdebstrap.log)"
  fi
  cp -a hack/vm/rootfs/. "$rootfs/"
  echo node >"$rootfs/etc/hostname"
  printf '127.0.0.1 localhost\n127.0.1.1 node\n' >"$rootfs/etc/hosts"
  echo 'LABEL=root / ext4 rw,errors=remount-ro 0 1' >"$rootfs/etc/fstab"
  # Timers that would only compete with the test for the CPU.
  for unit in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer; do
    ln -sf /dev/null "$rootfs/etc/systemd/system/$unit"
  done
  cp -L "$rootfs/vmlinuz" "$vm/vmlinuz"
  cp -L "$rootfs/initrd.img" "$vm/initrd.img"
  # Room for the loaded images and the containers besides the files.
  size=$(($(du -sm "$rootfs" | cut -f1) + 2048))
  timeout 600 mkfs.ext4 -q -F -L root -d "$rootfs" "$vm/root.img" "${size}M"
  remove_rootfs
  echo "$hash" >"$vm/root.inputs"
  echo "VM root image: built in $((SECONDS - start))s ($(du -sm "$vm/root.img" | cut -f1) MiB on disk)"
}

# build_images: hack/build-images.sh of the node's images, but for those that
# carry a sidemount binary (kubelet-node), which are built only when missing: the
# VM binds the bundle's binary over theirs, and an image that tests on this
# machine's dockerd use is never rebuilt under them from this tree's binary.
build_images() {
  local i build=()
  for i in "${images[@]}" "${extra_images[@]}"; do
    if grep -q '^COPY sidemount ' "images/$i/Dockerfile" &&
      timeout 30 docker image inspect "sidemount/$i:latest" >/dev/null 2>&1; then
      step "sidemount/$i:latest: present (the VM binds the bundle's binary into it)"
    else
      build+=("$i")
    fi
  done
  [ ${#build[@]} -eq 0 ] || hack/build-images.sh "${build[@]}"
}

# save_images NAME IMAGE...: target/vm/NAME.tar, docker save of the IMAGEs (their
# layers once), when one of them changed.
save_images() {
  local name=$1 ids
  shift
  ids=$(for i in "$@"; do timeout 30 docker image inspect -f '{{.Id}}' "sidemount/$i:latest"; done)
  if [ -f "$vm/$name.tar" ] && [ "$(cat "$vm/$name.inputs" 2>/dev/null)" = "$ids" ]; then
    step "VM $name tarball: up to date"
    return
  fi
  step "docker save $*"
  rm -f "$vm/$name.tar" "$vm/$name.inputs"
  timeout 600 docker save -o "$vm/$name.tar.tmp" "${@/#/sidemount/}"
  mv "$vm/$name.tar.tmp" "$vm/$name.tar"
  echo "$ids" >"$vm/$name.inputs"
  echo "VM $name tarball: $(du -sm "$vm/$name.tar" | cut -f1) MiB"
}

# sidecar_from_manifest NAME: the vcs-NAME sidecar's command and startupProbe
# command in manifests/base/daemonset.yaml, as bash arrays sidecar_command and
# sidecar_probe (external.sh runs the sidecar as the manifest does).
sidecar_from_manifest() {
  python3 - "$1" manifests/base/daemonset.yaml <<'PY'
import json, re, shlex, sys
name, path = sys.argv[1], sys.argv[2]
text = open(path).read()
block = text.split(f"- name: vcs-{name}\n", 1)[1]
block = re.split(r"\n        - name:|\n      containers:", block, maxsplit=1)[0]
command, probe = (json.loads(c) for c in re.findall(r"command: (\[.*\])", block)[:2])
for var, argv in (("sidecar_command", command), ("sidecar_probe", probe)):
    print(f"{var}=({' '.join(shlex.quote(a) for a in argv)})")
PY
}

# make_bundle: the run's bundle disk (a tar: hack/vm and the static binary) and an
# empty results disk.
make_bundle() {
  local bin=$1
  rm -rf "$run"
  mkdir -p "$run/bundle" "$run/out"
  cp -a hack/vm/. "$run/bundle/"
  rm -rf "$run/bundle/rootfs"
  cp "$bin" "$run/bundle/sidemount"
  sidecar_from_manifest nfs >"$run/bundle/sidecar-nfs.sh"
  echo "$test_deadline" >"$run/bundle/deadline"
  tar -cf "$run/bundle.tar" -C "$run/bundle" .
  truncate -s 256M "$run/results.img"
}

# print_progress FROM: prints the test's lines of the serial log after line FROM;
# echoes the new line count.
print_progress() {
  local n
  n=0
  [ ! -f "$run/serial.log" ] || n=$(wc -l <"$run/serial.log")
  if [ "$n" -gt "$1" ]; then
    # The console prefixes each line of the boot service with the time and its name.
    sed -n "$(($1 + 1)),${n}p" "$run/serial.log" | tr -d '\r' |
      sed -n -E 's/^\[ *[0-9.]+\] sidemount-vm-boot\[[0-9]+\]: ((sidemount-vm|PASS|FAIL|SKIP|INFO).*)/\1/p' >&2 || true
  fi
  echo "$n"
}

boot() {
  local seen=0 deadline=$((SECONDS + vm_deadline))
  mkdir -p "$vm/tmp"
  step "booting the VM (qemu TCG, 2 CPUs, 2 GiB; deadline ${vm_deadline}s)"
  # snapshot=on keeps the root image as built; qemu's overlay goes to TMPDIR.
  # cache=unsafe: nothing written in the VM needs to outlive it but the results,
  # which the VM syncs before it powers off.
  TMPDIR=$vm/tmp setsid qemu-system-x86_64 \
    -machine q35 -accel tcg -m 2048 -smp 2 -display none -monitor none -no-reboot \
    -nic none -serial "file:$run/serial.log" \
    -kernel "$vm/vmlinuz" -initrd "$vm/initrd.img" \
    -append "root=LABEL=root rw console=ttyS0 panic=-1 systemd.show_status=0" \
    -drive "file=$vm/root.img,format=raw,if=none,id=root,snapshot=on,cache=unsafe" \
    -device virtio-blk-pci,drive=root,serial=root \
    -drive "file=$run/bundle.tar,format=raw,if=none,id=bundle,readonly=on" \
    -device virtio-blk-pci,drive=bundle,serial=bundle \
    -drive "file=$vm/images.tar,format=raw,if=none,id=images,readonly=on" \
    -device virtio-blk-pci,drive=images,serial=images \
    -drive "file=$vm/extra.tar,format=raw,if=none,id=extra,readonly=on" \
    -device virtio-blk-pci,drive=extra,serial=extra \
    -drive "file=$run/results.img,format=raw,if=none,id=results" \
    -device virtio-blk-pci,drive=results,serial=results \
    </dev/null >"$run/qemu.log" 2>&1 &
  qemu_pid=$!
  echo "qemu pid $qemu_pid"
  while pid_alive "$qemu_pid"; do
    seen=$(print_progress "$seen")
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "the VM did not power off within ${vm_deadline}s: stopping qemu (pid $qemu_pid)" >&2
      stop_pid "$qemu_pid" qemu-system-x86_64
      break
    fi
    sleep 2
  done
  wait "$qemu_pid" 2>/dev/null || true
  qemu_pid=
  print_progress "$seen" >/dev/null
}

# report: the checks' results from the results disk; on failure the failing checks
# and the serial log's tail.
report() {
  local rc
  tar -xf "$run/results.img" -C "$run/out" 2>/dev/null || true
  rc=$(cat "$run/out/rc" 2>/dev/null || echo none)
  step "VM tier results (logs: $run)"
  if [ -f "$run/out/run.log" ]; then
    grep -a -E '^(PASS|FAIL|SKIP|INFO) ' "$run/out/run.log" || true
  fi
  if [ "$rc" = 0 ] && ! grep -aq '^\(FAIL\|SKIP\) ' "$run/out/run.log"; then
    echo "VM tier: every check passed in $((SECONDS - started))s"
    return 0
  fi
  printf '\n==> the serial log'"'"'s tail (%s)\n' "$run/serial.log" >&2
  tail -n 80 "$run/serial.log" | tr -d '\r' >&2 || true
  printf '\n==> failing checks\n' >&2
  local line name
  grep -a -E '^(FAIL|SKIP) ' "$run/out/run.log" 2>/dev/null | while read -r line; do
    echo "$line" >&2
    name=${line#* }
    name=${name%% *}
    [ ! -f "$run/out/checks/$name.log" ] || tail -n 30 "$run/out/checks/$name.log" | sed 's/^/    /' >&2
  done
  grep -aq -E '^(FAIL|SKIP) ' "$run/out/run.log" 2>/dev/null || echo "(none recorded: the test exited $rc before)" >&2
  die "VM tier failed (test exit status: $rc)"
}

started=$SECONDS
build_root_image
ensure_dockerd
bin="$PWD/$(hack/build-static.sh | tail -1)"
build_images
save_images images "${images[@]}"
save_images extra "${extra_images[@]}"
make_bundle "$bin"
boot
report
