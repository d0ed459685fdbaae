#!/usr/bin/env bash
# Removes the demo hack/up.sh made, in reverse order: the pod container, the volume
# (unmounted by the kubelet container, through the daemon, or lazily here when that
# cannot be), the kubelet container, the daemon, its VCS container (the daemon leaves
# it running when it stops, by design), sshd, the demo root, and dockerd if up.sh
# started it. Whatever is already gone is skipped: with nothing up it says so and
# exits 0. SIDEMOUNT_DEMO_DIR as for up.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib.sh
. hack/docker.sh
. hack/demo.sh

require_root

if ! demo_is_up; then
  echo "nothing to remove: no demo is up (no demo root at $demo_dir, no demo containers)"
  exit 0
fi

# What up.sh recorded; defaults for a demo that died before it wrote them.
kubelet_root=$demo_dir/var/lib/kubelet
daemon_pid='' sshd_pid='' dockerd_pid='' dockerd_log='' dockerd_netns='' made_run_sshd=''
if [ -r "$demo_state" ]; then
  # shellcheck disable=SC1090 # written by up.sh
  . "$demo_state"
fi
volume=$kubelet_root/$demo_volume_rel
docker_up=
timeout 20 docker version >/dev/null 2>&1 && docker_up=1

step "removing the pod container"
if [ -n "$docker_up" ]; then
  timeout 60 docker rm -f "$demo_pod" >/dev/null 2>&1 || true
fi

step "unmounting the volume $volume"
kubelet_running() {
  [ -n "$docker_up" ] &&
    [ "$(timeout 20 docker inspect -f '{{.State.Running}}' "$demo_kubelet" 2>/dev/null)" = true ]
}
if ! mountpoint -q "$volume" 2>/dev/null; then
  echo "not mounted"
elif kubelet_running && out=$(timeout 120 docker exec "$demo_kubelet" umount "$volume" 2>&1); then
  echo "unmounted by the kubelet container (umount -> helper -> daemon -> VCS)"
else
  [ -z "${out:-}" ] || echo "the kubelet container cannot unmount it: $out"
  # No helper here (-i): the daemon may be gone. The unmount propagates to the
  # kubelet and VCS containers; the sshfs client goes with its container.
  umount -i -l "$volume" 2>/dev/null || true
  echo "unmounted lazily here"
fi
# The volume's directories, when they are not on the demo's tmpfs.
for d in "$volume" "${volume%/*}" "${volume%/*/*}" "${volume%/*/*/*}"; do
  rmdir "$d" 2>/dev/null || true
done

step "removing the kubelet container"
if [ -n "$docker_up" ]; then
  ids=$(demo_containers)
  # shellcheck disable=SC2086 # one id per word
  [ -z "$ids" ] || timeout 60 docker rm -f $ids >/dev/null
fi

step "stopping the daemon"
if pid_runs "$daemon_pid" "sidemount serve"; then
  stop_pid "$daemon_pid" "sidemount serve"
  echo "stopped pid $daemon_pid"
else
  echo "not running"
fi

step "removing the VCS container $demo_vcs_container"
if [ -n "$docker_up" ] && demo_vcs_exists; then
  timeout 60 docker rm -f "$demo_vcs_container" >/dev/null
  echo "removed"
else
  echo "not there"
fi

step "stopping sshd"
if pid_runs "$sshd_pid" "$demo_dir/ssh/sshd_config"; then
  # Its sessions (one per sshfs client) first: they outlive the listener.
  for pid in $(pgrep -P "$sshd_pid" || true); do
    stop_pid "$pid" "sshd:"
  done
  stop_pid "$sshd_pid" "$demo_dir/ssh/sshd_config"
  echo "stopped pid $sshd_pid"
else
  echo "not running"
fi
[ -z "$made_run_sshd" ] || rmdir /run/sshd 2>/dev/null || true

step "unmounting and removing $demo_dir"
if mountpoint -q "$demo_dir"; then
  # Recursively, deepest first; lazily whatever is still busy. -i: no helper.
  umount -i -R "$demo_dir" 2>/dev/null || umount -i -R -l "$demo_dir"
fi
# Only the empty mount point is left: never delete what was under it.
if [ -d "$demo_dir" ]; then
  rmdir "$demo_dir" || die "$demo_dir is not empty: it holds files that are not the demo's; remove them by hand"
fi

if [ -n "$dockerd_pid" ]; then
  if pid_runs "$dockerd_pid" dockerd; then
    started_dockerd_pid=$dockerd_pid started_dockerd_netns=$dockerd_netns
    stop_dockerd
  fi
  [ -z "$dockerd_log" ] || [ ! -f "$dockerd_log" ] || rm -f "$dockerd_log"
fi

echo
echo "the demo is removed"
