#!/usr/bin/env bash
# Benchmarks, never timed assertions: a tmpfs mount+umount forwarded through the
# helper and the daemon, by the host executor and by a volume-client (VCS) container
# (agent and docker exec modes), against a direct mount(8)+umount(8) of the same
# filesystem, interleaved round by round in one run, under one kubelet root. A tmpfs
# needs one mount(2), which the host executor and the agent make themselves; the
# agent8 row adds an option that only mount(8) handles, to show that path too.
#   hack/bench.sh [ITERATIONS]     (default 200)
# Without a dockerd that answers, only the direct and host paths are measured.
# Then hack/bench-record.sh: the record's cost at 0, 1,000 and 10,000 mounts.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib.sh

# The paths, in the order of the table, and what each row says.
declare -A label=(
  [direct]="direct: mount(8)+umount(8)"
  [mounter]="mounter: sidemount mount/umount -> daemon -> mount(2)"
  [helper]="helper: mount(8) -> mount.tmpfs -> daemon -> mount(2)"
  [agent]="agent: sidemount mount/umount -> daemon -> agent -> mount(2)"
  [agent8]="agent8: the same, -o x-bench: the agent runs mount(8)"
  [exec]="exec: sidemount mount/umount -> daemon -> docker exec mount(8)"
  [api_host]="  curl -> daemon -> mount(2)"
  [api_agent]="  curl -> daemon -> agent -> mount(2)"
  [api_agent_only]="  curl -> agent -> mount(2) (no daemon)"
)
host_paths=(direct mounter helper)
docker_paths=(agent agent8 exec)
host_apis=(api_host)
docker_apis=(api_agent api_agent_only)

# run_PATH: one mount+umount of a tmpfs on $root/pods/PATH. They run in the
# measuring namespace (see `rounds`), with the variables it sets.
run_direct() {
  mount -i -t tmpfs tmpfs "$root/pods/direct"
  umount -i "$root/pods/direct"
}
run_helper() {
  mount -t tmpfs tmpfs "$root/pods/helper"
  umount "$root/pods/helper"
}
run_mounter() {
  "$bin" mount -t tmpfs tmpfs "$root/pods/mounter"
  "$bin" umount "$root/pods/mounter"
}
run_agent() {
  SIDEMOUNT_SOCKET=$run/agent/sidemount.sock "$bin" mount -t tmpfs tmpfs "$root/pods/agent"
  SIDEMOUNT_SOCKET=$run/agent/sidemount.sock "$bin" umount "$root/pods/agent"
}
# A userspace option (libmount keeps it in the container's utab) is one mount(2)
# cannot carry: the agent leaves the mount, and so the unmount, to util-linux.
run_agent8() {
  SIDEMOUNT_SOCKET=$run/agent/sidemount.sock "$bin" mount -t tmpfs -o x-bench tmpfs "$root/pods/agent8"
  SIDEMOUNT_SOCKET=$run/agent/sidemount.sock "$bin" umount "$root/pods/agent8"
}
run_exec() {
  SIDEMOUNT_SOCKET=$run/exec/sidemount.sock "$bin" mount -t tmpfs tmpfs "$root/pods/exec"
  SIDEMOUNT_SOCKET=$run/exec/sidemount.sock "$bin" umount "$root/pods/exec"
}
# batch NAME SOCKET [FIELDS]: one curl process posts N mount+unmount pairs of a
# tmpfs on $root/pods/NAME to the API on SOCKET (a daemon's or an agent's), so no
# process starts per request on the caller's side; FIELDS (JSON members, each with a
# leading comma) are added to every request. Writes the mean per pair to
# samples/NAME.
batch() {
  local name=$1 socket=$2 fields=${3:-} target=$root/pods/$1 args=() i t0 t1
  local api=(--next -sf --unix-socket "$socket" -o /dev/null -d)
  for ((i = 0; i < n; i++)); do
    args+=("${api[@]}" "{\"source\": \"tmpfs\", \"target\": \"$target\", \"fstype\": \"tmpfs\"$fields}" http://sidemount/v1/mounts)
    args+=("${api[@]}" "{\"target\": \"$target\"$fields}" http://sidemount/v1/unmounts)
  done
  t0=$EPOCHREALTIME
  curl --fail-early "${args[@]:1}"
  t1=$EPOCHREALTIME
  echo $(((${t1/./} - ${t0/./}) / n)) >"$work/samples/$name"
}

# rounds WORK N TOKEN DOCKER: the measuring loop, in a mount namespace of its own
# that is a slave of the machine's (as a containerized kubelet's, `rslave`): the
# daemons' mounts arrive in it, while its own mounts (the direct path's, and the
# helpers laid over /usr/sbin so that mount(8) finds mount.tmpfs) stay in it and go
# with it. Each round runs every path once, starting one further along each round,
# and appends each duration (microseconds) to WORK/samples/PATH. The VCS paths run
# when DOCKER is not empty.
rounds() {
  local work=$1 n=$2 token=$3 docker=$4
  local paths=("${host_paths[@]}")
  [ -z "$docker" ] || paths+=("${docker_paths[@]}")
  bin=$work/bin/sidemount root=$work/var/lib/kubelet run=$work/run
  mount -t overlay helpers -o "lowerdir=$work/helpers:/usr/sbin" /usr/sbin
  # The host executor's daemon, for the helpers and the mounter path.
  export SIDEMOUNT_SOCKET=$run/host/sidemount.sock
  mkdir -p "$work/samples"
  local i j p t0 t1 k=${#paths[@]}
  for ((i = 0; i < n; i++)); do
    for ((j = 0; j < k; j++)); do
      p=${paths[(i + j) % k]}
      t0=$EPOCHREALTIME
      "run_$p"
      t1=$EPOCHREALTIME
      echo $((${t1/./} - ${t0/./})) >>"$work/samples/$p"
    done
  done
  # Then the APIs alone, without the client's exec, to tell where the time goes.
  batch api_host "$run/host/sidemount.sock"
  if [ -n "$docker" ]; then
    batch api_agent "$run/agent/sidemount.sock"
    # An agent resolves targets beneath the roots the daemon names.
    batch api_agent_only "$run/agent/agents/bench-agent-$token.sock" ", \"beneath\": [\"$root\"]"
  fi
}

# The script runs itself again inside the measuring namespace.
if [ "${1:-}" = --rounds ]; then
  shift
  rounds "$@"
  exit
fi

require_root
require_cargo
n=${1:-200}
[[ $n =~ ^[1-9][0-9]*$ ]] || die "usage: hack/bench.sh [ITERATIONS]"
install_packages curl

# Every role runs the static binary, as the images ship it: the client (and the
# helpers), the daemons, and the agent the daemon binds into its container.
bin=$PWD/$(bash hack/build-static.sh | tail -1)

# Docker is optional: without it the VCS paths are left out, and the table says so.
docker=
if command -v docker >/dev/null && timeout 20 docker version >/dev/null 2>&1; then
  docker=yes
else
  step "no dockerd answers: measuring the direct and host paths only"
fi
image=sidemount/base:bookworm
if [ -n "$docker" ]; then
  # util-linux's mount(8) is all a tmpfs needs, and the base image has it.
  if ! timeout 30 docker image inspect "$image" >/dev/null 2>&1; then
    step "$image is missing: building the images"
    bash hack/build-images.sh
  fi
fi

# The scratch root: a tmpfs under /tmp in the machine's mount namespace, where
# dockerd resolves bind sources, made rshared (as systemd makes `/`) so that what a
# VCS container mounts under the kubelet root bound into it reaches this namespace.
# The trap leaves nothing behind, on success, failure, Ctrl-C or kill: the measuring
# loop and the daemons (by pid), this run's containers (by their label), the
# mounts, the directory.
work='' daemons=() measuring=''
token=$(printf '%x%04x' $$ "$RANDOM")
cleanup() {
  local status=$? pid
  trap - EXIT INT TERM HUP
  if [ -n "$measuring" ]; then
    kill "$measuring" 2>/dev/null || true
    wait "$measuring" 2>/dev/null || true
  fi
  for pid in "${daemons[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${daemons[@]}"; do
    timeout 20 tail --pid="$pid" -f /dev/null || kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ -n "$docker" ]; then
    local ids
    ids=$(for vcs in "bench-agent-$token" "bench-exec-$token"; do
      timeout 30 docker ps -aq --filter "label=io.sidemount.vcs=$vcs" || true
    done)
    # shellcheck disable=SC2086 # container ids, one word each
    [ -z "$ids" ] || timeout 60 docker rm -f $ids >/dev/null || true
  fi
  # -i: no helper (mount.tmpfs would ask a daemon that is gone).
  if [ -n "$work" ]; then
    if mountpoint -q "$work"; then umount -i -R -l "$work" || true; fi
    rm -rf --one-file-system "$work"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP
work=$(mktemp -d /tmp/sidemount-bench.XXXXXX)

mount -t tmpfs sidemount-bench "$work"
"$bin" share "$work" >/dev/null
root=$work/var/lib/kubelet
paths=("${host_paths[@]}") apis=("${host_apis[@]}")
[ -z "$docker" ] || paths+=("${docker_paths[@]}") apis+=("${docker_apis[@]}")
for p in "${paths[@]}" "${apis[@]}"; do mkdir -p "$root/pods/$p"; done
mkdir -p "$work/bin" "$work/helpers" "$work/run" "$work/etc"
# The binaries run from copies in the scratch root (a rebuild during the run does
# not touch them); the helpers link to the client there.
cp "$bin" "$work/bin/sidemount"
bin=$work/bin/sidemount
"$bin" install-helpers --dir "$work/helpers" --types tmpfs >/dev/null

# start_daemon NAME [ARGS...]: `sidemount serve` on run/NAME/sidemount.sock for the
# kubelet root, its log in NAME.log; returns once it answers with its VCS healthy.
start_daemon() {
  local name=$1 socket=$work/run/$1/sidemount.sock
  shift
  mkdir -p "$work/run/$name"
  "$bin" serve --socket "$socket" --kubelet-root "$root" --state-dir "$work/run/$name/state" \
    "$@" 2>"$work/$name.log" &
  daemons+=("$!")
  # The socket is bound first, but the API answers only once the VCS is up.
  local status
  for _ in $(seq 600); do
    if status=$(curl -sf --max-time 5 --unix-socket "$socket" http://sidemount/v1/status); then
      grep -Eq '"healthy": ?false' <<<"$status" || return 0
      printf '%s\n' "$status" >&2
      break
    fi
    kill -0 "${daemons[-1]}" 2>/dev/null || break
    sleep 0.1
  done
  tail -n 20 "$work/$name.log" >&2
  die "the $name daemon does not serve, or its VCS is not healthy"
}

# vcs_config NAME MODE: a daemon configuration whose one VCS, NAME, claims tmpfs in
# the base image with the capability profile this runtime allows (no --privileged),
# on the host's network (a tmpfs needs none, and no bridge or veth is made).
vcs_config() {
  local file=$work/etc/$1.yaml
  cat >"$file" <<EOF
kubelet_root: $root
request_timeout_seconds: 30
vcs:
  - name: $1
    types: [tmpfs]
    image: $image
    mode: $2
    host_network: true
    security: {privileged: false, capabilities: [SYS_ADMIN], unconfined: true}
EOF
  echo "$file"
}

# One daemon per executor: the embedded default (host executor for tmpfs), and one
# whose VCS container mounts tmpfs through its agent, and one through docker exec.
step "starting the daemons"
start_daemon host
if [ -n "$docker" ]; then
  start_daemon agent --config "$(vcs_config "bench-agent-$token" agent)" --agent-binary "$bin"
  start_daemon exec --config "$(vcs_config "bench-exec-$token" exec)"
fi

step "tmpfs mount+umount, $n rounds of each path, interleaved; then each API alone"
# In the background, so that a signal reaches the trap at once (which stops it).
unshare --mount --propagation slave -- bash "$0" --rounds "$work" "$n" "$token" "$docker" &
measuring=$!
wait "$measuring"
measuring=

# Mean and median of each path, and its mean's ratio to the direct path's; for the
# APIs alone, the mean per pair of the one curl process.
direct_mean=$(awk '{ s += $1 } END { print s / NR }' "$work/samples/direct")
echo
printf '%-64s %9s %9s %9s\n' "path (mount+umount)" mean median "vs direct"
for p in "${paths[@]}" "${apis[@]}"; do
  [ "$p" != "${apis[0]}" ] || printf '%s\n' "APIs alone, $n pairs posted by one curl process (no client exec):"
  sort -n "$work/samples/$p" | awk -v name="${label[$p]}" -v d="$direct_mean" '
    { v[NR] = $1; s += $1 }
    END {
      m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
      median = NR > 1 ? sprintf("%6.2f ms", m / 1000) : "-"
      printf "%-64s %6.2f ms %9s %8.2fx\n", name, s / NR / 1000, median, s / NR / d
    }'
done
[ -n "$docker" ] || echo "(no dockerd answers: the agent and exec paths were not measured)"

# The record's cost beside it: a pair with 0, 1,000 and 10,000 mounts recorded, and
# the restart to the first answer with as many (see hack/bench-record.sh).
echo
SIDEMOUNT_BIN=$bin bash hack/bench-record.sh "$n"
