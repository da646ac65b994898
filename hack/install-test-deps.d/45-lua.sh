#!/usr/bin/env bash
# Lua interpreters for the Argo CD health-check tests (tests/argocd): Debian's lua5.4 (also
# installed by 40-prometheus.sh) and lua5.1. Argo CD runs health checks in gopher-lua, a
# Lua 5.1 implementation, so the tests run the script under both: 5.1 rejects anything
# newer than Argo CD understands (goto, integer division, bitwise operators, <const>).
# `apt-get update` runs only when the package lists are older than APT_LISTS_MAX_AGE_MIN
# minutes (default 360).
set -euo pipefail

log() { echo "45-lua: $*" >&2; }
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
for pkg in lua5.4 lua5.1; do
  command -v "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "${#missing[@]}" -eq 0 ]; then
  log "already installed: lua5.4 lua5.1"
  exit 0
fi

apt=(env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -y -q)
if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Release' \
      -mmin "-${APT_LISTS_MAX_AGE_MIN:-360}" 2>/dev/null | head -1)" ]; then
  log "apt-get update"
  as_root "${apt[@]}" update
fi
log "installing ${missing[*]}"
as_root "${apt[@]}" install --no-install-recommends "${missing[@]}"
# lua5.1's Debian alternatives outrank lua5.4's: keep plain `lua`/`luac` on 5.4, as they
# were before 5.1 came in (the tests call lua5.4 and lua5.1 by name).
as_root update-alternatives --quiet --set lua-interpreter /usr/bin/lua5.4 || true
as_root update-alternatives --quiet --set lua-compiler /usr/bin/luac5.4 || true
lua5.4 -v
lua5.1 -v
