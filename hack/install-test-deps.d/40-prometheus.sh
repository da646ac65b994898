#!/usr/bin/env bash
# Debian packages for the observability tests (tests/observability) and the Argo CD
# health-check tests: `prometheus` (prometheus + promtool) and `lua5.4`.
#
# Installs only. The tests start their own `prometheus` binary with a temporary config
# and TSDB on a free loopback port; the Debian service must never run. Its maintainer
# scripts would start it (and the recommended node exporter), so:
#   - recommends are not installed (no prometheus-node-exporter);
#   - a policy-rc.d that forbids service starts is in place during the install
#     (exit 101 = "action forbidden"; a pre-existing one is left as it is);
#   - afterwards, any packaged prometheus daemon that got started anyway is stopped.
# `apt-get update` runs at most once, and not at all when the package lists are
# younger than APT_LISTS_MAX_AGE_MIN minutes (default 360).
set -euo pipefail

PACKAGES=(prometheus lua5.4)
MAX_AGE="${APT_LISTS_MAX_AGE_MIN:-360}"

log() { echo "40-prometheus: $*" >&2; }
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 \
  || missing+=(prometheus)
command -v lua5.4 >/dev/null 2>&1 || missing+=(lua5.4)
if [ "${#missing[@]}" -eq 0 ]; then
  log "already installed: ${PACKAGES[*]}"
  exit 0
fi

apt=(env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -y -q)
if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Release' -mmin "-$MAX_AGE" \
      2>/dev/null | head -1)" ]; then
  log "apt-get update"
  as_root "${apt[@]}" update
else
  log "apt package lists are recent; skipping apt-get update"
fi

prc=/usr/sbin/policy-rc.d
created_prc=0
if [ ! -e "$prc" ]; then
  printf '#!/bin/sh\nexit 101\n' | as_root tee "$prc" >/dev/null
  as_root chmod 755 "$prc"
  created_prc=1
fi
rc=0
log "installing ${missing[*]}"
as_root "${apt[@]}" install --no-install-recommends "${missing[@]}" || rc=$?
if [ "$created_prc" = 1 ]; then as_root rm -f "$prc"; fi
[ "$rc" = 0 ] || exit "$rc"

# Belt and braces: the packaged service must not be left running. Only the Debian
# daemon is matched (its binary, run as the `prometheus` user with the packaged config),
# so a prometheus started by a test is never touched.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  as_root systemctl disable --now prometheus.service >/dev/null 2>&1 || true
fi
for pid in $(pgrep -u prometheus -x prometheus 2>/dev/null || true); do
  log "stopping the packaged prometheus daemon (pid $pid)"
  as_root kill "$pid" || true
done

prometheus --version 2>&1 | head -1
promtool --version 2>&1 | head -1
lua5.4 -v
