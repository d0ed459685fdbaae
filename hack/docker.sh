#!/usr/bin/env bash
# Sourced by hack/ scripts: a running dockerd. When none answers, starts Debian's
# (installing docker.io if needed) and registers its stop, by pid, in the EXIT trap.

started_dockerd_pid=
started_dockerd_log=
started_dockerd_netns=

# ensure_dockerd: returns once `docker version` answers.
ensure_dockerd() {
  if timeout 20 docker version >/dev/null 2>&1; then
    return 0
  fi
  install_packages docker.io
  step "starting dockerd"
  local log
  timeout 10 findmnt -n /run/docker/netns/default >/dev/null 2>&1 || started_dockerd_netns=1
  log=$(mktemp /tmp/sidemount-dockerd.XXXXXX.log)
  setsid dockerd >"$log" 2>&1 &
  started_dockerd_pid=$! started_dockerd_log=$log
  for _ in $(seq 1 60); do
    timeout 5 docker version >/dev/null 2>&1 && return 0
    kill -0 "$started_dockerd_pid" 2>/dev/null || break
    sleep 1
  done
  tail -20 "$log" >&2
  die "dockerd did not start (log: $log)"
}

# stop_dockerd: stops the dockerd ensure_dockerd started, if it did.
stop_dockerd() {
  [ -n "$started_dockerd_pid" ] || return 0
  step "stopping the dockerd started here (pid $started_dockerd_pid)"
  kill "$started_dockerd_pid" 2>/dev/null || true
  timeout 60 tail --pid="$started_dockerd_pid" -f /dev/null || kill -9 "$started_dockerd_pid" 2>/dev/null || true
  rm -f "$started_dockerd_log"
  # dockerd leaves its default network namespace mounted when it exits.
  [ -z "$started_dockerd_netns" ] || timeout 10 umount /run/docker/netns/default 2>/dev/null || true
  started_dockerd_pid='' started_dockerd_log='' started_dockerd_netns=''
}

# remove_test_leftovers: containers, private dockerds (tests/common/node.rs), their
# bridges and mounts a killed test run may have left.
remove_test_leftovers() {
  local ids pid bridge
  ids=$( (timeout 30 docker ps -aq --filter name=sidemount-test-
          timeout 30 docker ps -aq --filter name=sidemount-vcs-test-) 2>/dev/null || true)
  # shellcheck disable=SC2086
  [ -z "$ids" ] || timeout 60 docker rm -f $ids >/dev/null 2>&1 || true
  for pid in $(pgrep -f '^dockerd --config-file /tmp/sidemount-e2e-' || true); do
    kill "$pid" 2>/dev/null && timeout 30 tail --pid="$pid" -f /dev/null || kill -9 "$pid" 2>/dev/null || true
  done
  for bridge in $(ip -o link show type bridge 2>/dev/null | awk -F': ' '$2 ~ /^smtest/ {print $2}'); do
    ip link del "$bridge" 2>/dev/null || true
  done
  findmnt -rn -o TARGET | grep '^/tmp/sidemount-e2e-' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
}
