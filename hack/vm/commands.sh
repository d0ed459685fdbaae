# Commands through `sidemount run` and the shims, sourced by run.sh: the GlusterFS
# and Ceph clients answer from their VCS containers (vcs-glusterfs, vcs-ceph), which
# join the node's configuration once their images are loaded; the daemon restarts
# with it and adopts the containers it made before. An rbd shim installed before
# then fails `sidemount check`, which passes once the ceph VCS runs rbd.

with_gluster_and_ceph=$out/sidemount-all.yaml

# A shim whose program no VCS runs yet: check says so.
check_flags_a_shim_without_vcs() {
  in_kubelet sidemount install-helpers --dir /usr/sbin --commands rbd
  local rc=0 report
  report=$(in_kubelet sidemount check --kubelet-root "$kroot" --helpers-dir /usr/sbin) || rc=$?
  echo "$report"
  [ "$rc" = 1 ] && grep -q 'no VCS allows rbd' <<<"$report"
}

extra_images_loaded() {
  wait_until 900 eval "! kill -0 $(cat /run/sidemount-vm-extra-load.pid)"
  cat "$out/extra-images.log"
  timeout 30 docker image inspect sidemount/vcs-glusterfs:latest sidemount/vcs-ceph:latest >/dev/null
  {
    cat "$here/sidemount.yaml"
    cat <<'YAML'
  - name: glusterfs
    types: [glusterfs]
    image: sidemount/vcs-glusterfs:latest
    host_network: true
    long_running: true
    run: [glusterfs]
  - name: ceph
    types: [ceph]
    image: sidemount/vcs-ceph:latest
    host_network: true
    run: [rbd]
YAML
  } >"$with_gluster_and_ceph"
  local before
  before=$(timeout 30 docker inspect -f '{{.Id}}' sidemount-vcs-nfs)
  stop_daemon
  start_daemon "$with_gluster_and_ceph"
  [ "$(timeout 30 docker inspect -f '{{.Id}}' sidemount-vcs-nfs)" = "$before" ] ||
    { echo "the restarted daemon made sidemount-vcs-nfs again instead of adopting it"; return 1; }
  in_kubelet sidemount check --kubelet-root "$kroot" --helpers-dir /usr/sbin
}

glusterfs_version_through_run() {
  in_kubelet sidemount run --vcs glusterfs -- glusterfs --version | tee /dev/stderr | grep -qi 'glusterfs [0-9]'
}

rbd_version_through_the_shim() {
  # The kubelet's rbd plugin execs `rbd`: the shim runs it in sidemount-vcs-ceph.
  in_kubelet rbd --version | tee /dev/stderr | grep -qi 'ceph version'
  in_kubelet sidemount run --vcs ceph -- rbd --version | grep -qi 'ceph version'
}

run_refuses_what_no_vcs_allows() {
  local rc=0 msg
  msg=$(in_kubelet sidemount run --vcs ceph -- ceph --version 2>&1) || rc=$?
  echo "$msg"
  [ "$rc" != 0 ] && grep -q 'does not allow running "ceph"' <<<"$msg"
}

chain check-flags-shim-without-vcs check_flags_a_shim_without_vcs \
  gluster-ceph-vcs-join-on-daemon-restart extra_images_loaded \
  glusterfs-version-through-run glusterfs_version_through_run \
  rbd-version-through-shim rbd_version_through_the_shim \
  run-refuses-unlisted-command run_refuses_what_no_vcs_allows
