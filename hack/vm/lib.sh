# Sourced by the node test inside the VM: checks that print one PASS or FAIL line
# each (hack/test-vm.sh collects them), and small waits.

out=${out:-/var/tmp/vmtest/out}
mkdir -p "$out/checks"
failed=0

info() { echo "INFO $*"; }

# uptime_s: seconds since boot, to the hundredth.
uptime_s() { cut -d' ' -f1 /proc/uptime; }

# check NAME CMD...: runs CMD (a function, with set -e) with its output in
# out/checks/NAME.log; prints "PASS NAME (Ns)" or "FAIL NAME (Ns)" and the output's tail.
check() {
  local name=$1 t0 rc took
  shift
  t0=${EPOCHREALTIME/./}
  ( set -euo pipefail; "$@" ) >"$out/checks/$name.log" 2>&1
  rc=$?
  took=$(((${EPOCHREALTIME/./} - t0) / 100000))
  took=$((took / 10)).$((took % 10))
  if [ "$rc" = 0 ]; then
    echo "PASS $name (${took}s)"
  else
    echo "FAIL $name (${took}s, exit $rc): last lines of its output:"
    tail -n 25 "$out/checks/$name.log" | sed 's/^/    /'
    failed=$((failed + 1))
  fi
  return "$rc"
}

# chain NAME FUNC [NAME FUNC]...: checks that build on each other: once one fails,
# the rest print SKIP (and count as failed).
chain() {
  local broken=
  while [ $# -ge 2 ]; do
    if [ -n "$broken" ]; then
      echo "SKIP $1 (after $broken failed)"
      failed=$((failed + 1))
    else
      check "$1" "$2" || broken=$1
    fi
    shift 2
  done
}

# must NAME CMD...: a check the rest depends on: the test stops when it fails.
must() {
  check "$@" || { echo "FAIL node-test: stopped after $1 failed"; exit 1; }
}

# wait_until SECONDS CMD...: runs CMD quietly every 0.2 s until it succeeds; 1 when
# SECONDS pass first.
wait_until() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}

# expect_fail CMD...: CMD must fail; its output is shown.
expect_fail() {
  if "$@"; then
    echo "expected to fail: $*"
    return 1
  fi
}

# in_kubelet CMD...: runs CMD in the kubelet container.
in_kubelet() { timeout 120 docker exec kubelet "$@"; }

# pod_sh VOL SCRIPT: runs SCRIPT in a pod container with VOL bound rslave at /data,
# as container runtimes bind pod volumes.
pod_sh() {
  timeout 120 docker run --rm -v "$1:/data:rslave" sidemount/kubelet-node:latest sh -ec "$2"
}

# pid_of CONTAINER: its init's pid on the node.
pid_of() { timeout 30 docker inspect -f '{{.State.Pid}}' "$1"; }

# mounted_in PID PATH: PATH is a mount point in PID's mount namespace (read from
# /proc/PID/mountinfo: the container's own /proc would not know this process).
mounted_in() { timeout 30 findmnt -N "$1" -n "$2"; }
