# NFS checks, sourced by run.sh: the kubelet's nfs plugin calls, end to end.
#   helper path:  mount(8) -t nfs4 in the kubelet container -> mount.nfs4 (sidemount)
#                 -> daemon -> agent in sidemount-vcs-nfs -> mount.nfs4 -> kernel client
#   mounter path: `sidemount mount -t nfs -o vers=3` (--experimental-mounter-path)
#   mount-utils:  the kubelet's own argv (doMount with a mounter path, and under
#                 systemd-run --scope on a systemd node), then its Unmount twice
# The node's root namespace, the kubelet container and a pod container (the volume
# bound rslave, as container runtimes bind pod volumes) read and write one file set,
# which the server's directory shows; unmount leaves nothing anywhere.

# The container the nfs VCS runs in (external.sh runs it as a sidecar instead).
nfs_vcs_container=sidemount-vcs-nfs
nfs_pod=11111111-2222-3333-4444-555555555555
nfs_vol=$kroot/pods/$nfs_pod/volumes/kubernetes.io~nfs/v4vol
nfs_vol3=$kroot/pods/$nfs_pod/volumes/kubernetes.io~nfs/v3vol

# nfs_mounted_everywhere VOL VERS: VOL is an NFS mount (version VERS) in the node's
# namespace, the kubelet's and the VCS container's, made by the agent of vcs nfs.
nfs_mounted_everywhere() {
  findmnt -n -o TARGET,FSTYPE,SOURCE,OPTIONS "$1"
  findmnt -n -o OPTIONS "$1" | grep -q "vers=$2"
  mounted_in "$(pid_of kubelet)" "$1"
  mounted_in "$(pid_of "$nfs_vcs_container")" "$1"
  sidemount status | jq -e --arg t "$1" '.mounts[] | select(.target == $t and .executor == "vcs/nfs")'
}

# nothing_left VOL: no mount on VOL in any namespace, no record, no NFS mount at all.
nothing_left() {
  expect_fail findmnt -n "$1"
  expect_fail mounted_in "$(pid_of kubelet)" "$1"
  expect_fail mounted_in "$(pid_of "$nfs_vcs_container")" "$1"
  sidemount status | jq -e --arg t "$1" '[.mounts[] | select(.target == $t)] | length == 0'
  [ -z "$(findmnt -n -t nfs,nfs4)" ]
}

nfs4_helper_mount() {
  in_kubelet mkdir -p "$nfs_vol"
  # The nfs plugin's call: mount -t nfs4 SERVER:EXPORT TARGET (mount(8) finds the helper).
  in_kubelet mount -t nfs4 "$server:$export_dir" "$nfs_vol"
  nfs_mounted_everywhere "$nfs_vol" 4
}

nfs_node_reads_writes() {
  grep -q 'hello from' "$nfs_vol/hello"
  echo "written by the node" >"$nfs_vol/from-node"
}

nfs_kubelet_reads_writes() {
  in_kubelet grep -q 'written by the node' "$nfs_vol/from-node"
  in_kubelet sh -c "echo 'written by the kubelet' >'$nfs_vol/from-kubelet'"
}

nfs_pod_reads_writes() {
  pod_sh "$nfs_vol" 'grep -q "written by the kubelet" /data/from-kubelet; echo "written by a pod" >/data/from-pod'
  grep -q 'written by a pod' "$nfs_vol/from-pod"
}

nfs_server_sees_all() {
  grep -q 'written by the node' "$export_dir/from-node"
  grep -q 'written by the kubelet' "$export_dir/from-kubelet"
  grep -q 'written by a pod' "$export_dir/from-pod"
}

nfs4_helper_unmount() {
  in_kubelet umount "$nfs_vol"
  nothing_left "$nfs_vol"
}

nfs3_mounter_path() {
  in_kubelet mkdir -p "$nfs_vol3"
  # nolock: the NFSv3 lock protocol would need rpc.statd running in the VCS.
  in_kubelet sidemount mount -t nfs -o vers=3,nolock "$server:$export_dir" "$nfs_vol3"
  nfs_mounted_everywhere "$nfs_vol3" 3
  pod_sh "$nfs_vol3" 'grep -q "written by a pod" /data/from-pod; echo v3 >/data/from-v3'
  grep -q v3 "$export_dir/from-v3"
  in_kubelet sidemount umount "$nfs_vol3"
  nothing_left "$nfs_vol3"
}

# The kubelet's argv, as mount-utils makes it (MakeMountArgsSensitive...: [-t
# TYPE] [-o OPTS] [SRC] DST; with a mounter path, `<mounter> mount ARGS`; where
# systemd runs, the same under `systemd-run --description=Kubernetes transient
# mount for DST --scope --`), and its Unmount: `umount DST`, whose "not mounted"
# from a second one it takes as done.
mounter=/usr/local/bin/sidemount
nfs_vol_argv=$kroot/pods/$nfs_pod/volumes/kubernetes.io~nfs/mount-utils
nfs_vol_scope=$kroot/pods/$nfs_pod/volumes/kubernetes.io~nfs/systemd-scope

# kubelet_sees PID VOL FSTYPE VERS: in PID's mount namespace (the kubelet's) VOL
# holds a mount of type FSTYPE of the export at NFS version VERS, which the
# daemon recorded as made by vcs nfs. On the node it arrives twice, the same
# each time: `/` and the kubelet root bound onto itself are peers, and each
# receives a copy (the one under the kubelet root's is hidden).
kubelet_sees() {
  local seen fstype source options
  seen=$(timeout 30 findmnt -N "$1" -n -o FSTYPE,SOURCE,OPTIONS --mountpoint "$2")
  echo "$seen"
  [ -n "$seen" ]
  [ "$(sort -u <<<"$seen" | wc -l)" = 1 ]
  read -r fstype source options <<<"$(head -n1 <<<"$seen")"
  [ "$fstype" = "$3" ]
  [ "$source" = "$server:$export_dir" ]
  [[ ",$options," == *",vers=$4,"* ]]
  sidemount status | jq -e --arg t "$2" '.mounts[] | select(.target == $t and .executor == "vcs/nfs")'
}

# unmounted_twice VOL CMD...: `CMD umount VOL` succeeds; a second one fails and
# says "not mounted"; nothing is left anywhere.
unmounted_twice() {
  local vol=$1 again
  shift
  "$@" umount "$vol"
  if again=$("$@" umount "$vol" 2>&1); then
    echo "a second umount succeeded: $again"
    return 1
  fi
  echo "second umount: $again"
  grep -q 'not mounted' <<<"$again"
  nothing_left "$vol"
}

# unmount_left VOL: what a failed check left mounted on VOL, unmounted.
unmount_left() {
  ! findmnt -n "$1" >/dev/null || sidemount umount "$1" || true
}

nfs_mount_utils_argv() {
  trap 'unmount_left "$nfs_vol_argv"' EXIT
  in_kubelet mkdir -p "$nfs_vol_argv"
  in_kubelet "$mounter" mount -t nfs -o vers=3,nolock "$server:$export_dir" "$nfs_vol_argv"
  kubelet_sees "$(pid_of kubelet)" "$nfs_vol_argv" nfs 3
  # Unmount by umount(8), which finds sidemount's umount.nfs in the kubelet.
  unmounted_twice "$nfs_vol_argv" in_kubelet
}

# sidemount's own umount helpers on the node for the kubelet that runs there,
# removed again (the other checks run on a node without them).
node_helpers=(mount.nfs mount.nfs4 umount.nfs umount.nfs4)
remove_node_helpers() {
  local h
  for h in "${node_helpers[@]}"; do
    [ "$(readlink "/usr/sbin/$h")" != "$mounter" ] || rm -f "/usr/sbin/$h"
  done
}

nfs_mount_utils_systemd_scope() {
  trap 'remove_node_helpers; unmount_left "$nfs_vol_scope"' EXIT
  mkdir -p "$nfs_vol_scope"
  # mount-utils' probe for systemd, then the mount in a transient scope.
  timeout 60 systemd-run --description="Kubernetes systemd probe" --scope true
  timeout 120 systemd-run --description="Kubernetes transient mount for $nfs_vol_scope" --scope -- \
    "$mounter" mount -t nfs -o vers=4.1 "$server:$export_dir" "$nfs_vol_scope"
  # The kubelet runs on the node: its namespace is the node's.
  kubelet_sees $$ "$nfs_vol_scope" nfs4 4.1
  mounted_in "$(pid_of kubelet)" "$nfs_vol_scope"
  sidemount install-helpers --dir /usr/sbin --types nfs,nfs4 --binary "$mounter"
  unmounted_twice "$nfs_vol_scope" timeout 120
}

chain nfs4-helper-mount nfs4_helper_mount \
  nfs-node-reads-writes nfs_node_reads_writes \
  nfs-kubelet-reads-writes nfs_kubelet_reads_writes \
  nfs-pod-reads-writes nfs_pod_reads_writes \
  nfs-server-sees-all nfs_server_sees_all \
  nfs4-helper-unmount nfs4_helper_unmount
check nfs3-mounter-path nfs3_mounter_path
check nfs-mount-utils-argv nfs_mount_utils_argv
check nfs-mount-utils-systemd-scope nfs_mount_utils_systemd_scope
