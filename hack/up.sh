#!/usr/bin/env bash
# The demo, on a fresh Debian machine, as root: one command brings up a node where a
# containerized kubelet mounts an sshfs volume whose client (sshfs) is installed
# nowhere but in a volume-client container, and shows where the mount is visible.
#
#   hack/up.sh [--kubelet-root PATH]      then look around; hack/down.sh removes it all
#
# It installs the missing Debian packages, starts dockerd if none answers, builds the
# static sidemount and the images (vcs-sshfs, kubelet-node), and then, on a tmpfs
# demo root (SIDEMOUNT_DEMO_DIR, default /var/lib/sidemount-demo) in this machine's
# mount namespace (where Docker resolves bind sources):
#   - shares the kubelet root DEMO/var/lib/kubelet (`sidemount share`)
#   - starts sshd on 127.0.0.1 (a free port, its own keys) exporting DEMO/export
#   - starts `sidemount serve` detached: the embedded default configuration plus the
#     sshfs VCS (DEMO/etc/sidemount.yaml), socket in DEMO/run/sidemount
#   - starts a kubelet container (sidemount/kubelet-node, --pid host, the kubelet root
#     bound rshared) that runs `mount -t fuse.sshfs ...` as a kubelet would
#   - starts a pod container that binds the volume rslave and reads the export's file
#   - prints where the mount is visible, with its mount id and propagation.
# The kubelet root defaults to the demo's own; --kubelet-root PATH (or
# SIDEMOUNT_DEMO_KUBELET_ROOT) uses another one, e.g. a node's real /var/lib/kubelet,
# which is then shared and gets the volume under PATH/pods/demo-pod.
# A demo that is already up is removed first (hack/down.sh), so every run starts
# from the current source. When a step fails, the logs are shown and everything
# made so far is removed (SIDEMOUNT_DEMO_KEEP=1 leaves it for a look).
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib.sh
. hack/docker.sh
. hack/demo.sh

kubelet_root=${SIDEMOUNT_DEMO_KUBELET_ROOT:-}
while [ $# -gt 0 ]; do
  case $1 in
    --kubelet-root) [ $# -ge 2 ] || die "--kubelet-root needs a path"; kubelet_root=$2; shift 2 ;;
    --kubelet-root=*) kubelet_root=${1#*=}; shift ;;
    -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) die "unknown argument $1 (usage: hack/up.sh [--kubelet-root PATH])" ;;
  esac
done

require_root
started=$SECONDS

# --- On failure: show why, then remove whatever was made. -----------------------
made=    # set once the demo root is being made: from then on a failure removes it
up_done=
on_exit() {
  local rc=$?
  [ -n "$made" ] && [ -z "$up_done" ] || return 0
  set +e
  printf '\nerror: hack/up.sh failed (exit %s)\n' "$rc" >&2
  for log in "$demo_dir/log/daemon.log" "$demo_dir/log/sshd.log"; do
    [ -s "$log" ] && { printf -- '--- last lines of %s\n' "$log" >&2; tail -n 30 "$log" >&2; }
  done
  if [ "${SIDEMOUNT_DEMO_KEEP:-}" = 1 ]; then
    echo "SIDEMOUNT_DEMO_KEEP=1: the demo is left as it is; hack/down.sh removes it" >&2
  else
    echo "removing what was made (hack/down.sh)" >&2
    bash hack/down.sh >&2
  fi
  exit "$rc"
}
trap on_exit EXIT

if demo_is_up; then
  step "a demo is already up: removing it first (hack/down.sh)"
  bash hack/down.sh
fi

step "installing what is missing"
require_cargo
install_packages util-linux mount docker.io openssh-server openssh-client jq
[ -c /dev/fuse ] || modprobe fuse || die "/dev/fuse is missing and the fuse module does not load"

# --- The demo root: a tmpfs here, in the namespace dockerd resolves binds in. -----
step "demo root $demo_dir (tmpfs)"
[ ! -e "$demo_dir" ] || die "$demo_dir exists and is not a demo root: choose another SIDEMOUNT_DEMO_DIR"
made=1
mkdir -p "$demo_dir"
mount -t tmpfs -o mode=0755 sidemount-demo "$demo_dir"
# Private: the demo's mounts do not spread into other namespaces (systemd makes /
# shared); the kubelet root below is shared on its own.
mount --make-private "$demo_dir"
mkdir -p "$demo_dir"/{bin,etc,log,keys,ssh,export}
install -d -m 0700 "$demo_run"
demo_record demo_dir "$demo_dir"
if [ -z "$kubelet_root" ]; then
  kubelet_root=$demo_dir/var/lib/kubelet
  mkdir -p "$kubelet_root"
else
  [ -d "$kubelet_root" ] || die "--kubelet-root $kubelet_root is not a directory"
  kubelet_root=$(realpath "$kubelet_root")
  echo "using the kubelet root $kubelet_root (not the demo's own): the volume goes under $kubelet_root/pods/demo-pod"
fi
demo_record kubelet_root "$kubelet_root"
volume=$kubelet_root/$demo_volume_rel
echo "kubelet root: $kubelet_root"

step "dockerd"
ensure_dockerd
if [ -n "$started_dockerd_pid" ]; then
  demo_record dockerd_pid "$started_dockerd_pid"
  demo_record dockerd_log "$(readlink "/proc/$started_dockerd_pid/fd/1" || true)"
  demo_record dockerd_netns "$started_dockerd_netns"
  echo "started dockerd (pid $started_dockerd_pid); hack/down.sh stops it"
else
  echo "dockerd answers: $(timeout 20 docker version -f '{{.Server.Version}} (API {{.Server.APIVersion}})')"
fi

# build-images.sh builds the static binary for kubelet-node; the second
# build-static.sh only prints its path (unless the source changed in between).
step "building the images (vcs-sshfs, kubelet-node) and the static sidemount"
bash hack/build-images.sh vcs-sshfs kubelet-node
cp "$(bash hack/build-static.sh | tail -1)" "$demo_bin"
echo "the daemon and the VCS agent run $demo_bin (a copy)"

step "sidemount share $kubelet_root"
"$demo_bin" share "$kubelet_root"

step "sidemount check --kubelet-root $kubelet_root --no-daemon"
"$demo_bin" check --kubelet-root "$kubelet_root" --no-daemon

# --- sshd on 127.0.0.1: the volume server. -------------------------------------
port=$(free_port)
step "sshd on 127.0.0.1:$port exporting $demo_dir/export"
echo "hello from the sshd export on 127.0.0.1:$port" >"$demo_dir/export/hello"
ssh-keygen -q -t ed25519 -N '' -C sidemount-demo-host -f "$demo_dir/ssh/host_key"
ssh-keygen -q -t ed25519 -N '' -C sidemount-demo -f "$demo_dir/keys/id"
cp "$demo_dir/keys/id.pub" "$demo_dir/ssh/authorized_keys"
cat >"$demo_dir/ssh/sshd_config" <<EOF
# The demo's sshd: key login for root on 127.0.0.1 only, sftp for sshfs.
Port $port
ListenAddress 127.0.0.1
HostKey $demo_dir/ssh/host_key
AuthorizedKeysFile $demo_dir/ssh/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
StrictModes no
UsePAM no
PidFile $demo_dir/ssh/sshd.pid
Subsystem sftp internal-sftp
EOF
if [ ! -d /run/sshd ]; then # sshd's privilege separation directory
  mkdir -p /run/sshd
  demo_record made_run_sshd 1
fi
/usr/sbin/sshd -f "$demo_dir/ssh/sshd_config" -E "$demo_dir/log/sshd.log"
wait_until 10 test -s "$demo_dir/ssh/sshd.pid" || die "sshd wrote no pid file"
demo_record sshd_pid "$(cat "$demo_dir/ssh/sshd.pid")"
listening() { grep -q "^ *[0-9]*: 0100007F:$(printf %04X "$port") 00000000:0000 0A " /proc/net/tcp; }
wait_until 10 listening || die "sshd does not listen on 127.0.0.1:$port"
echo "sshd pid $(cat "$demo_dir/ssh/sshd.pid")"

# --- The daemon. ----------------------------------------------------------------
step "sidemount serve (embedded default + the sshfs VCS), detached"
cat >"$demo_dir/etc/sidemount.yaml" <<EOF
# Only what differs from the embedded default configuration.
kubelet_root: $kubelet_root
vcs:
  - name: $demo_vcs   # its container: $demo_vcs_container
    types: [fuse.sshfs]
    image: sidemount/vcs-sshfs:latest
    long_running: true              # sshfs serves the mount for as long as it lives
    host_network: true              # reaches sshd on 127.0.0.1
    # The capability profile (some runtimes refuse --privileged).
    security: {privileged: false, capabilities: [SYS_ADMIN], devices: [/dev/fuse], unconfined: true}
    binds: ["$demo_dir/keys:/keys"] # the ssh key, read-only
EOF
cat "$demo_dir/etc/sidemount.yaml"
NO_COLOR=1 setsid "$demo_bin" serve --config "$demo_dir/etc/sidemount.yaml" --socket "$demo_socket" \
  --state-dir "$demo_run/state" --agent-binary "$demo_bin" \
  </dev/null >>"$demo_dir/log/daemon.log" 2>&1 &
daemon_pid=$!
echo "$daemon_pid" >"$demo_dir/daemon.pid"
demo_record daemon_pid "$daemon_pid"
healthy() {
  pid_alive "$daemon_pid" || die "the daemon exited"
  "$demo_bin" status --socket "$demo_socket" --healthy
}
wait_until 120 healthy || die "the daemon did not report its VCS healthy within 120 s"
"$demo_bin" status --socket "$demo_socket" |
  jq -r '"daemon pid '"$daemon_pid"', socket '"$demo_socket"'", (.vcs[] | "vcs \(.name): healthy \(.healthy)")'

# --- The kubelet, the volume, the pod. --------------------------------------------
step "kubelet container $demo_kubelet (sidemount/kubelet-node, --pid host, $kubelet_root rshared)"
timeout 120 docker run -d --name "$demo_kubelet" --label "$demo_label" --pid host --network host \
  -v "$kubelet_root:$kubelet_root:rshared" -v "$demo_run:/run/sidemount" \
  sidemount/kubelet-node:latest >/dev/null
kubelet_pid=$(docker inspect -f '{{.State.Pid}}' "$demo_kubelet")
echo "pid $kubelet_pid"

options="port=$port,IdentityFile=/keys/id,StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null,allow_other"
source="root@127.0.0.1:$demo_dir/export"
step "the kubelet mounts the volume: mount -t fuse.sshfs -o $options $source $volume"
timeout 120 docker exec "$demo_kubelet" mkdir -p "$volume"
timeout 120 docker exec "$demo_kubelet" mount -t fuse.sshfs -o "$options" "$source" "$volume"
"$demo_bin" status --socket "$demo_socket" |
  jq -r '.mounts[] | "the daemon recorded \(.fstype) on \(.target): executor \(.executor), mount \(.mount_id)"'
if command -v sshfs >/dev/null; then
  echo "(this machine has sshfs too; the demo did not use it)"
else
  echo "(this machine has no sshfs: the client runs in $demo_vcs_container)"
fi

step "pod container $demo_pod (sidemount/base, the volume bound rslave at /data)"
timeout 120 docker run -d --name "$demo_pod" --label "$demo_label" --network none \
  -v "$volume:/data:rslave" sidemount/base:bookworm sh -c 'cat /data/hello; exec sleep infinity' >/dev/null
wait_until 10 bash -c "docker logs $demo_pod 2>&1 | grep -q ." || true
echo "the pod read: $(docker logs "$demo_pod" 2>&1)"

# --- Where the mount is visible. --------------------------------------------------
step "where the mount is visible (V=$volume)"
vcs_pid=$(docker inspect -f '{{.State.Pid}}' "$demo_vcs_container")
pod_pid=$(docker inspect -f '{{.State.Pid}}' "$demo_pod")
# row WHERE PID PATH CONTAINER: the mount on PATH in PID's namespace, per
# `sidemount list`, and hello read there (by docker exec in CONTAINER, or here).
row() {
  local where=$1 pid=$2 path=$3 container=$4 mount hello shown
  mount=$("$demo_bin" list --pid "$pid" --target "$path" --output json |
    jq -r --arg t "$path" '[.filesystems[] | select(.target == $t)] | last |
      if . == null then "-\tnot mounted" else
      "\(.id)\t\(.propagation) (\([(if .peer_group then "shared:\(.peer_group)" else empty end),
        (if .master then "master:\(.master)" else empty end)] | join(",")))" end')
  if [ -n "$container" ]; then
    hello=$(timeout 30 docker exec "$container" cat "$path/hello" 2>&1) || hello="- ($hello)"
  else
    hello=$(cat "$path/hello" 2>&1) || hello="- ($hello)"
  fi
  shown=$path
  [ "$path" != "$volume" ] || shown=V
  printf '%-28s %-7s %-6s %-6s %-26s %s\n' "$where" "$pid" "$shown" "${mount%%$'\t'*}" "${mount#*$'\t'}" "$hello"
}
printf '%-28s %-7s %-6s %-6s %-26s %s\n' WHERE PID PATH MOUNT "PROPAGATION (PEERS)" "CONTENT OF hello"
row host 1 "$volume" ""
row "VCS container" "$vcs_pid" "$volume" "$demo_vcs_container"
row "kubelet container" "$kubelet_pid" "$volume" "$demo_kubelet"
row "pod container" "$pod_pid" /data "$demo_pod"

up_done=1
step "the demo is up ($((SECONDS - started)) s) and stays up; look around:"
cat <<EOF
  docker ps --filter label=$demo_label; docker ps --filter name=$demo_vcs_container
  docker exec $demo_pod cat /data/hello
  $demo_bin status --socket $demo_socket
  $demo_bin list --pid $kubelet_pid --target $kubelet_root
  less $demo_dir/log/daemon.log
Remove it (containers, daemon, sshd, mounts, $demo_dir):
  hack/down.sh
EOF
