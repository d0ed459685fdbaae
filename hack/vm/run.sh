#!/bin/bash
# The node test, run at boot inside the VM by sidemount-vm-boot from the bundle disk
# (hack/test-vm.sh makes it): sets up a node as operators run it, then the NFS,
# iSCSI, disruptive and provider checks. Each check prints PASS NAME or FAIL NAME;
# the exit status is the number of failed checks.
#
# The node: dockerd; /var/lib/kubelet shared; an NFS server (v3 and v4) and an iSCSI
# target on 127.0.0.1; `sidemount serve` with the docker provider and the VCS
# containers of hack/vm/sidemount.yaml; a kubelet container (sidemount/kubelet-node:
# mount(8), sidemount's helpers and command shims, no volume client; the node's
# sidemount bound over its own) with the kubelet root bound rshared, the daemon's
# socket directory and the host's pids.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=/var/tmp/vmtest/out
. "$here/lib.sh"

kroot=/var/lib/kubelet
export_dir=/srv/export
server=127.0.0.1
iqn=iqn.2026-12.io.sidemount:node-lun
config=/etc/sidemount/sidemount.yaml
daemon_pidfile=/run/sidemount-vm-daemon.pid

node_has_no_volume_client() {
  local p
  for p in mount.nfs mount.nfs4 umount.nfs umount.nfs4 iscsiadm iscsid rbd glusterfs; do
    if command -v "$p"; then
      echo "the node has $p"
      return 1
    fi
  done
  echo "no mount.nfs, umount.nfs, iscsiadm, iscsid, rbd or glusterfs on the node"
}

install_sidemount() {
  install -m 0755 "$here/sidemount" /usr/local/bin/sidemount
  sidemount --version
}

start_docker() {
  timeout 120 systemctl start docker
  wait_until 60 docker info
}

load_images() {
  timeout 600 docker load -i "$VM_DISK_images"
  timeout 30 docker images
}

# The big images only `sidemount run` needs load meanwhile (commands.sh waits).
load_extra_images() {
  timeout 900 docker load -i "$VM_DISK_extra" >"$out/extra-images.log" 2>&1 &
  echo $! >/run/sidemount-vm-extra-load.pid
}

nfs_server() {
  mkdir -p "$export_dir"
  echo "hello from the node's NFS server" >"$export_dir/hello"
  echo "$export_dir $server(rw,sync,no_subtree_check,no_root_squash,insecure)" >/etc/exports
  timeout 60 exportfs -ra
  timeout 60 systemctl restart nfs-server
  timeout 30 exportfs -v
  # Both versions are served.
  cat /proc/fs/nfsd/versions
  grep -q '+3' /proc/fs/nfsd/versions
  grep -q '+4' /proc/fs/nfsd/versions
}

iscsi_target() {
  # The initiator's kernel side, which iscsid in its container drives.
  modprobe iscsi_tcp
  truncate -s 64M /srv/lun1.img
  timeout 30 systemctl start tgt
  wait_until 30 tgtadm --lld iscsi --op show --mode target
  timeout 30 tgtadm --lld iscsi --op new --mode target --tid 1 -T "$iqn"
  timeout 30 tgtadm --lld iscsi --op new --mode logicalunit --tid 1 --lun 1 -b /srv/lun1.img
  timeout 30 tgtadm --lld iscsi --op bind --mode target --tid 1 -I ALL
  timeout 30 tgtadm --lld iscsi --op show --mode target
}

# start_daemon [CONFIG]: `sidemount serve` (its pid in $daemon_pidfile, since
# checks run in subshells) with CONFIG as the node's configuration, or the one it
# had, until healthy.
start_daemon() {
  mkdir -p /etc/sidemount /var/lib/sidemount
  [ -z "${1:-}" ] || cp "$1" "$config"
  setsid sidemount serve --config "$config" --agent-binary /usr/local/bin/sidemount \
    </dev/null >>"$out/daemon.log" 2>&1 &
  echo $! >"$daemon_pidfile"
  echo "daemon pid $!"
  if ! wait_until 240 sidemount status --healthy; then
    sidemount status || true
    tail -n 30 "$out/daemon.log"
    return 1
  fi
  sidemount status | jq -c '.vcs[] | {name, healthy, note}'
}

stop_daemon() {
  local pid
  pid=$(cat "$daemon_pidfile" 2>/dev/null) || return 0
  kill "$pid"
  wait_until 30 eval "! kill -0 $pid" || kill -9 "$pid"
  rm -f "$daemon_pidfile"
}

start_kubelet() {
  mkdir -p "$kroot"
  sidemount share "$kroot"
  # The bundle's binary over the image's: its helpers are links to it.
  timeout 120 docker run -d --name kubelet --privileged --pid host \
    -v "$kroot:$kroot:rshared" -v /run/sidemount:/run/sidemount -v /dev:/dev \
    -v /usr/local/bin/sidemount:/usr/local/bin/sidemount:ro \
    sidemount/kubelet-node:latest
  wait_until 30 in_kubelet true
  in_kubelet sidemount check --kubelet-root "$kroot" --helpers-dir /usr/sbin
}

info "node test starting at $(uptime_s) s of uptime"
must node-has-no-volume-client node_has_no_volume_client
must install-sidemount install_sidemount
must dockerd-up start_docker
info "dockerd up at $(uptime_s) s"
must images-loaded load_images
info "images loaded at $(uptime_s) s"
load_extra_images
must nfs-server-v3-v4 nfs_server
must iscsi-target iscsi_target
must daemon-serves-with-vcs-containers start_daemon "$here/sidemount.yaml"
must kubelet-container-check start_kubelet
info "node ready at $(uptime_s) s"

for part in nfs iscsi commands disruptive external bench; do
  # shellcheck source=/dev/null
  [ ! -f "$here/$part.sh" ] || . "$here/$part.sh"
done

stop_daemon
info "node test done at $(uptime_s) s: $failed failed"
exit "$failed"
