# NFS checks, sourced by run.sh: the kubelet's nfs plugin calls, end to end.
#   helper path:  mount(8) -t nfs4 in the kubelet container -> mount.nfs4 (sidemount)
#                 -> daemon -> agent in sidemount-vcs-nfs -> mount.nfs4 -> kernel client
#   mounter path: `sidemount mount -t nfs -o vers=3` (--experimental-mounter-path)
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

chain nfs4-helper-mount nfs4_helper_mount \
  nfs-node-reads-writes nfs_node_reads_writes \
  nfs-kubelet-reads-writes nfs_kubelet_reads_writes \
  nfs-pod-reads-writes nfs_pod_reads_writes \
  nfs-server-sees-all nfs_server_sees_all \
  nfs4-helper-unmount nfs4_helper_unmount
check nfs3-mounter-path nfs3_mounter_path
