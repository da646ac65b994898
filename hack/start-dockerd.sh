#!/usr/bin/env bash
# Makes a Docker engine available on this machine, idempotently:
#   1. installs Debian's docker.io (dockerd, containerd, runc) and debootstrap if missing
#      (`--install-only` stops here: that is what hack/install-test-deps.d/30-docker.sh runs);
#   2. starts dockerd in the background unless `docker info` already answers;
#   3. waits until `docker info` works.
#
# The daemon is started WITHOUT the default bridge, NAT or iptables rules
# (--bridge=none --iptables=false --ip-forward=false): containers get no network
# unless they ask for `--network host`, so nothing built or run here can reach
# anything but loopback, and dockerd does not rewrite the host's firewall
# (its iptables mode would set the FORWARD policy to DROP for every other test).
#
# Environment:
#   DOCKERD_DATA_ROOT  data root          (default /var/lib/docker)
#   DOCKERD_LOG        daemon log file    (default /var/log/daskflow-dockerd.log)
#   DOCKERD_WAIT       seconds to wait    (default 90)
set -euo pipefail

DATA_ROOT="${DOCKERD_DATA_ROOT:-/var/lib/docker}"
LOG="${DOCKERD_LOG:-/var/log/daskflow-dockerd.log}"
WAIT="${DOCKERD_WAIT:-90}"

log() { echo "start-dockerd: $*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

install_packages() {
  local missing=()
  command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
  command -v containerd >/dev/null 2>&1 || missing+=(containerd)
  command -v runc >/dev/null 2>&1 || missing+=(runc)
  command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
  if [ "${#missing[@]}" -eq 0 ]; then
    return 0
  fi
  log "installing ${missing[*]} from Debian"
  local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -y -q)
  # `apt-get update` once, before the install (the lists on a fresh machine may be stale).
  as_root "${apt[@]}" update
  # docker.io's maintainer scripts try to start the service; there is no init system
  # here, so tell invoke-rc.d not to (policy-rc.d exit 101 = "action forbidden").
  local prc=/usr/sbin/policy-rc.d created_prc=0
  if [ ! -e "$prc" ]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee "$prc" >/dev/null
    as_root chmod 755 "$prc"
    created_prc=1
  fi
  local rc=0
  as_root "${apt[@]}" install --no-install-recommends docker.io debootstrap iptables || rc=$?
  if [ "$created_prc" = 1 ]; then as_root rm -f "$prc"; fi
  return "$rc"
}

docker_ok() { docker info >/dev/null 2>&1; }

start_daemon() {
  if docker_ok; then
    log "dockerd already answers"
    return 0
  fi
  if [ -s /var/run/docker.pid ] && kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
    log "dockerd (pid $(cat /var/run/docker.pid)) is running but not answering yet; waiting"
  else
    as_root mkdir -p "$DATA_ROOT" "$(dirname "$LOG")"
    log "starting dockerd (data root $DATA_ROOT, log $LOG)"
    # setsid + nohup: the daemon outlives this script and the shell that ran it.
    as_root setsid nohup dockerd \
      --data-root "$DATA_ROOT" \
      --host unix:///var/run/docker.sock \
      --pidfile /var/run/docker.pid \
      --bridge=none \
      --iptables=false \
      --ip6tables=false \
      --ip-forward=false \
      --ip-masq=false \
      >>"$LOG" 2>&1 </dev/null &
  fi
  local i
  for ((i = 0; i < WAIT; i++)); do
    if docker_ok; then
      log "dockerd is up ($(docker version --format '{{.Server.Version}}' 2>/dev/null))"
      return 0
    fi
    sleep 1
  done
  log "dockerd did not answer within ${WAIT}s; last lines of $LOG:"
  tail -n 30 "$LOG" >&2 || true
  return 1
}

install_packages
if [ "${1:-}" = "--install-only" ]; then
  exit 0
fi
start_daemon
