# iSCSI checks, sourced by run.sh: the kubelet's iscsi plugin, end to end, with
# the node's file-backed LUN from tgt. iscsiadm is a command shim in the kubelet
# container (it runs in sidemount-vcs-iscsi, beside iscsid); the disk appears on
# the node; the kubelet formats it on first use (SafeFormatAndMount: blkid, then
# mkfs.ext4) and mounts it through the mounter path (the daemon's host executor),
# then binds it into the pod's volume.

portal=$server:3260
lun_dev=/dev/disk/by-path/ip-$portal-iscsi-$iqn-lun-1
iscsi_global=$kroot/plugins/kubernetes.io/iscsi/iface-default/$portal-$iqn-lun-1
iscsi_pod=66666666-7777-8888-9999-000000000000
iscsi_vol=$kroot/pods/$iscsi_pod/volumes/kubernetes.io~iscsi/disk

iscsi_discovery() {
  # The shim is sidemount, and no iscsiadm is on the node.
  in_kubelet sh -c 'readlink -f "$(command -v iscsiadm)"' | grep -q sidemount
  in_kubelet iscsiadm -m discovery -t sendtargets -p "$portal" | tee /dev/stderr | grep -q "$iqn"
}

iscsi_login() {
  in_kubelet iscsiadm -m node -T "$iqn" -p "$portal" --login
  # The kubelet waits for the disk by its path.
  wait_until 60 test -b "$lun_dev"
  in_kubelet test -b "$lun_dev"
  ls -l "$lun_dev"
  in_kubelet iscsiadm -m session | grep -q "$iqn"
}

# format_and_mount: as SafeFormatAndMount: blkid exit 2 (no filesystem) means a
# new disk, formatted; then the mount through the mounter path.
format_and_mount() {
  local rc=0
  in_kubelet blkid -p -s TYPE -s PTTYPE -o export "$lun_dev" || rc=$?
  case $rc in
    2) in_kubelet mkfs.ext4 -F -m0 "$lun_dev" ;;
    0) echo "already formatted" ;;
    *) echo "blkid failed: $rc"; return 1 ;;
  esac
  in_kubelet mkdir -p "$iscsi_global" "$iscsi_vol"
  in_kubelet sidemount mount -t ext4 -o defaults "$lun_dev" "$iscsi_global"
  in_kubelet sidemount mount -o bind "$iscsi_global" "$iscsi_vol"
  findmnt -n -o TARGET,FSTYPE,SOURCE "$iscsi_vol" | grep -q ext4
  mounted_in "$(pid_of kubelet)" "$iscsi_vol"
}

iscsi_format_and_mount() {
  format_and_mount
  in_kubelet blkid -o value -s TYPE "$lun_dev" | grep -qx ext4
}

iscsi_pod_reads_writes() {
  pod_sh "$iscsi_vol" 'echo "written by a pod on iSCSI" >/data/from-pod; sync'
  grep -q 'written by a pod on iSCSI' "$iscsi_vol/from-pod"
  in_kubelet grep -q 'written by a pod on iSCSI' "$iscsi_vol/from-pod"
}

iscsi_unmount() {
  in_kubelet sidemount umount "$iscsi_vol"
  in_kubelet sidemount umount "$iscsi_global"
  expect_fail findmnt -n "$iscsi_vol"
  expect_fail findmnt -n "$iscsi_global"
}

iscsi_logout() {
  in_kubelet iscsiadm -m node -T "$iqn" -p "$portal" --logout
  # No session (iscsiadm's exit 21: none found), no disk, no device left.
  local rc=0
  in_kubelet iscsiadm -m session || rc=$?
  [ "$rc" = 21 ] || { echo "iscsiadm -m session exited $rc, want 21"; return 1; }
  wait_until 30 test ! -e "$lun_dev"
  [ -z "$(ls /sys/class/iscsi_session 2>/dev/null)" ]
  ! grep -q ' sd[a-z]*$' /proc/partitions
}

# A second use of the same disk finds its filesystem and data: no new format.
iscsi_second_use_keeps_data() {
  iscsi_login
  local rc=0
  in_kubelet blkid -p -s TYPE -s PTTYPE -o export "$lun_dev" || rc=$?
  [ "$rc" = 0 ] || { echo "blkid exited $rc: the filesystem is gone"; return 1; }
  format_and_mount
  grep -q 'written by a pod on iSCSI' "$iscsi_vol/from-pod"
  iscsi_unmount
  iscsi_logout
  in_kubelet iscsiadm -m node -o delete -T "$iqn" -p "$portal"
}

chain iscsi-shim-discovery iscsi_discovery \
  iscsi-login-disk-appears iscsi_login \
  iscsi-format-on-first-use-and-mount iscsi_format_and_mount \
  iscsi-pod-reads-writes iscsi_pod_reads_writes \
  iscsi-unmount iscsi_unmount \
  iscsi-logout-nothing-left iscsi_logout \
  iscsi-second-use-keeps-data iscsi_second_use_keeps_data
