#!/usr/bin/env bash
# Sourced by hack/up.sh and hack/down.sh (not a command): where the demo lives, what
# its pieces are named, and its state file, in which up.sh records what it started
# (pids, whether it started dockerd, the kubelet root) for down.sh.
#   SIDEMOUNT_DEMO_DIR   the demo root, a tmpfs (default /var/lib/sidemount-demo)
# shellcheck disable=SC2034 # the settings are used by the scripts that source this

demo_dir=${SIDEMOUNT_DEMO_DIR:-/var/lib/sidemount-demo}
case $demo_dir in
  /?*) demo_dir=${demo_dir%/} ;;
  *) die "SIDEMOUNT_DEMO_DIR must be an absolute path other than /: $demo_dir" ;;
esac

demo_state=$demo_dir/demo.env      # KEY=VALUE lines, sourced by down.sh
demo_run=$demo_dir/run/sidemount   # the daemon's socket dir, /run/sidemount in the kubelet
demo_socket=$demo_run/sidemount.sock
demo_bin=$demo_dir/bin/sidemount   # a copy of the static build: rebuilds do not touch the demo
demo_label=io.sidemount.demo=1     # on the kubelet and pod containers
demo_kubelet=sidemount-demo-kubelet
demo_pod=sidemount-demo-pod
demo_vcs=demo-sshfs                # the daemon runs it as container sidemount-vcs-demo-sshfs
demo_vcs_container=sidemount-vcs-$demo_vcs
# The volume, under the kubelet root, where a kubelet mounts a pod's sshfs volume.
demo_volume_rel=pods/demo-pod/volumes/kubernetes.io~sshfs/demo

# demo_record KEY VALUE: adds KEY=VALUE (shell-quoted) to the state file.
demo_record() {
  printf '%s=%q\n' "$1" "$2" >>"$demo_state"
}

# demo_containers: ids of the demo's kubelet and pod containers (none when dockerd
# does not answer).
demo_containers() {
  timeout 30 docker ps -aq --filter "label=$demo_label" 2>/dev/null || true
}

# demo_vcs_exists: the daemon's VCS container for the demo exists.
demo_vcs_exists() {
  timeout 30 docker container inspect "$demo_vcs_container" >/dev/null 2>&1
}

# demo_is_up: any piece of a demo is there: its root (mounted, or left empty), its
# containers.
demo_is_up() {
  mountpoint -q "$demo_dir" || { [ -d "$demo_dir" ] && [ -z "$(ls -A "$demo_dir")" ]; } ||
    [ -n "$(demo_containers)" ] || demo_vcs_exists
}
