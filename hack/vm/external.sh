# The DaemonSet's shape, sourced by run.sh: the nfs VCS with `provider: external`,
# run as manifests/base/daemonset.yaml runs its native sidecar: the same image, the
# agent binary from a shared directory (the init container's copy), the sidecar's
# own command, privileged with the host's pids and network, the kubelet root
# rshared, and started once its startupProbe command passes. hack/test-vm.sh reads
# the command and the probe from the manifest into sidecar-nfs.sh. Then the NFS
# checks again, against it.

# shellcheck source=/dev/null
. "$here/sidecar-nfs.sh"
sidecar=vcs-nfs-sidecar
agent_dir=/var/lib/sidemount-vm/agent-binary

external_sidecar_started() {
  echo "sidecar command: ${sidecar_command[*]}"
  echo "startupProbe: ${sidecar_probe[*]}"
  stop_daemon
  # The docker provider's container would serve the same agent socket.
  timeout 60 docker rm -f sidemount-vcs-nfs
  mkdir -p "$agent_dir"
  cp /usr/local/bin/sidemount "$agent_dir/sidemount"
  timeout 120 docker run -d --name "$sidecar" --privileged --pid host --network host \
    -v "$kroot:$kroot:rshared" -v /run/sidemount:/run/sidemount -v /dev:/dev \
    -v "$agent_dir:/.sidemount:ro" \
    --entrypoint "${sidecar_command[0]}" sidemount/vcs-nfs:latest "${sidecar_command[@]:1}"
  # The startupProbe: every second, up to 60 times.
  local i
  for i in $(seq 1 60); do
    timeout 5 docker exec "$sidecar" "${sidecar_probe[@]}" >/dev/null 2>&1 && break
    [ "$i" -lt 60 ] || { timeout 30 docker logs "$sidecar"; return 1; }
    sleep 1
  done
  sed 's/^    image: sidemount\/vcs-nfs:latest$/&\n    provider: external/' "$config" >"$out/sidemount-external.yaml"
  grep -q 'provider: external' "$out/sidemount-external.yaml"
  start_daemon "$out/sidemount-external.yaml"
  sidemount status | jq -e '.vcs[] | select(.name == "nfs") | .provider == "external" and .healthy'
}

nfs_vcs_container=$sidecar
nfs_vol=$kroot/pods/$nfs_pod/volumes/kubernetes.io~nfs/external
chain external-sidecar-started-as-manifests external_sidecar_started \
  external-nfs4-helper-mount nfs4_helper_mount \
  external-nfs-kubelet-reads-writes nfs_kubelet_reads_writes \
  external-nfs-pod-reads-writes nfs_pod_reads_writes \
  external-nfs4-helper-unmount nfs4_helper_unmount
