# Figures, sourced by run.sh last: an NFSv4 mount+umount pair made directly (the
# vcs-nfs image has nfs-common: a throwaway container is the only place it is
# installed) against the same pair through sidemount from the kubelet container
# (mount(8) -> mount.nfs4 helper -> daemon -> agent), side by side in one run.
# Each loop runs inside its container, so container starts are not counted.

bench_rounds=${bench_rounds:-10}
b_dir=$kroot/pods/bench/volumes/kubernetes.io~nfs/b

# A shell line that makes bench_rounds mount+umount pairs and prints the mean per
# pair in ms.
bench_line="set -e; t0=\$(date +%s%N); for i in \$(seq $bench_rounds); do mount -t nfs4 $server:$export_dir $b_dir; umount $b_dir; done; echo \$(( (\$(date +%s%N) - t0) / $bench_rounds / 1000000 ))"

bench_nfs() {
  mkdir -p "$b_dir"
  local direct helper
  for _ in 1 2; do
    direct=$(timeout 600 docker run --rm --privileged --network host -v "$kroot:$kroot:rshared" \
      --entrypoint sh sidemount/vcs-nfs:latest -c "$bench_line")
    helper=$(in_kubelet sh -c "$bench_line")
  done
  info "bench: NFSv4 mount+umount, mean of $bench_rounds pairs (second of two rounds): direct mount.nfs4 ${direct} ms, through sidemount ${helper} ms" | tee "$out/bench.txt"
  [ -z "$(findmnt -n -t nfs,nfs4)" ]
}

check bench-nfs-direct-vs-sidemount bench_nfs
cat "$out/bench.txt" 2>/dev/null
