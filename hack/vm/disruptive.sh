# Disruptive checks, sourced by run.sh, as the Kubernetes storage suite's
# disruptive tests: data written to an NFS volume before a restart of the daemon,
# of the vcs-nfs container and of the kubelet container is readable (and writable)
# after each, and the volume unmounts through the kubelet afterwards; a volume
# unmounted while the daemon was down is reconciled when it starts again; an iSCSI
# session outlives a restart of vcs-iscsi (iscsid adopts it from the node database).

d_pod=dddddddd-0000-0000-0000-000000000000
d_vol=$kroot/pods/$d_pod/volumes/kubernetes.io~nfs/disrupted

# readable_after WHAT: the data written before is there, from the node, the
# kubelet and a pod, and a new file can be written.
readable_after() {
  grep -q "before the restarts" "$d_vol/data"
  in_kubelet grep -q "before the restarts" "$d_vol/data"
  pod_sh "$d_vol" "grep -q 'before the restarts' /data/data; echo '$1' >/data/after-$1"
  grep -q "$1" "$export_dir/after-$1"
}

disrupted_mount() {
  in_kubelet mkdir -p "$d_vol"
  in_kubelet mount -t nfs4 "$server:$export_dir" "$d_vol"
  in_kubelet sh -c "echo 'before the restarts' >'$d_vol/data'"
}

daemon_restart() {
  stop_daemon
  start_daemon
  sidemount status | jq -e --arg t "$d_vol" '[.mounts[] | select(.target == $t)] | length == 1'
  readable_after daemon-restart
}

vcs_nfs_restart() {
  timeout 120 docker restart sidemount-vcs-nfs
  wait_until 60 sidemount status --healthy
  readable_after vcs-restart
}

kubelet_restart() {
  timeout 120 docker restart kubelet
  wait_until 30 in_kubelet true
  mounted_in "$(pid_of kubelet)" "$d_vol"
  readable_after kubelet-restart
}

disrupted_unmount() {
  in_kubelet umount "$d_vol"
  expect_fail findmnt -n "$d_vol"
  expect_fail mounted_in "$(pid_of kubelet)" "$d_vol"
  expect_fail mounted_in "$(pid_of sidemount-vcs-nfs)" "$d_vol"
  sidemount status | jq -e '.mounts | length == 0'
}

# A volume unmounted by hand while the daemon is down: its record is dropped at
# start and reported as reconciled away.
unmounted_while_daemon_down() {
  in_kubelet mount -t nfs4 "$server:$export_dir" "$d_vol"
  stop_daemon
  # No helper on the node: umount -i, as an operator would.
  umount -i "$d_vol"
  start_daemon
  sidemount status | jq -e --arg t "$d_vol" '
    ([.mounts[] | select(.target == $t)] | length == 0)
    and ([.reconciled_away[] | select(.target == $t)] | length == 1)'
}

iscsi_session_outlives_vcs_restart() {
  # The node record was deleted after the last use: discovery makes it again.
  in_kubelet iscsiadm -m discovery -t sendtargets -p "$portal"
  in_kubelet iscsiadm -m node -T "$iqn" -p "$portal" --login
  wait_until 60 test -b "$lun_dev"
  local before
  before=$(ls /sys/class/iscsi_session)
  timeout 120 docker restart sidemount-vcs-iscsi
  wait_until 60 sidemount status --healthy
  # The same session, known to the new iscsid, and the disk still there.
  wait_until 30 in_kubelet iscsiadm -m session
  in_kubelet iscsiadm -m session | grep -q "$iqn"
  [ "$(ls /sys/class/iscsi_session)" = "$before" ]
  test -b "$lun_dev"
  in_kubelet iscsiadm -m node -T "$iqn" -p "$portal" --logout
  wait_until 30 test ! -e "$lun_dev"
  in_kubelet iscsiadm -m node -o delete -T "$iqn" -p "$portal"
}

chain disruptive-mount-and-write disrupted_mount \
  disruptive-daemon-restart daemon_restart \
  disruptive-vcs-nfs-restart vcs_nfs_restart \
  disruptive-kubelet-restart kubelet_restart \
  disruptive-unmount-after-restarts disrupted_unmount \
  disruptive-unmounted-while-daemon-down unmounted_while_daemon_down
check disruptive-iscsi-session-outlives-vcs-restart iscsi_session_outlives_vcs_restart
