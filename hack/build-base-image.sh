#!/usr/bin/env bash
# Builds the local base image daskflow-base:py3.11 without pulling anything from a
# container registry: a Debian bookworm "minbase" root filesystem made by debootstrap
# from the Debian mirror that apt uses on this machine, plus Python 3.11 (bookworm's
# python3) with venv support, imported with `docker import`.
#
# It stands in for the official python:3.11-slim (the Dockerfile's default
# BASE_IMAGE) where no registry can be reached:
#   docker build --build-arg BASE_IMAGE=daskflow-base:py3.11 ...
#
# Cached at two levels:
#   - the image: nothing is done if daskflow-base:py3.11 exists with the same recipe label;
#   - the rootfs tarball, kept under ~/.cache/daskflow/base/, so a fresh dockerd (new data
#     root) re-imports in seconds instead of running debootstrap again.
# FORCE=1 rebuilds both.
#
# Environment:
#   BASE_TAG       image name        (default daskflow-base:py3.11)
#   DEBIAN_MIRROR  Debian mirror     (default: the first bookworm mirror in /etc/apt/sources.list*)
#   CACHE_DIR      cache directory   (default ~/.cache/daskflow)
#   FORCE=1        rebuild tarball and image
set -euo pipefail

BASE_TAG="${BASE_TAG:-daskflow-base:py3.11}"
SUITE=bookworm
CACHE_DIR="${CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/daskflow}"
# Packages on top of minbase; mirrors what python:3.11-slim carries (ca-certificates,
# netbase, tzdata) minus the compilers and headers, which minbase never had.
INCLUDE="python3,python3-venv,python-is-python3,ca-certificates,netbase,tzdata"
# Bump when the trimming below changes, so cached tarballs and images are rebuilt.
RECIPE_VERSION=1

log() { echo "build-base-image: $*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

debian_mirror() {
  if [ -n "${DEBIAN_MIRROR:-}" ]; then
    echo "$DEBIAN_MIRROR"
    return
  fi
  local m=""
  # deb822 sources (bookworm's default): the URIs of the stanza whose Suites include bookworm.
  if compgen -G "/etc/apt/sources.list.d/*.sources" >/dev/null; then
    m=$(awk -v suite="$SUITE" '
      BEGIN { RS = ""; FS = "\n" }
      {
        uris = ""; ok = 0
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^URIs:/) { sub(/^URIs:[ \t]*/, "", $i); split($i, u, /[ \t]+/); uris = u[1] }
          if ($i ~ /^Suites:/ && (" " $i " ") ~ (" " suite " ")) ok = 1
          if ($i ~ /^Enabled:[ \t]*no/) ok = 0
        }
        if (ok && uris != "") { print uris; exit }
      }' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  fi
  # one-line sources: "deb [opts] URI bookworm main".
  if [ -z "$m" ]; then
    m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
      sed -E 's/\[[^]]*\]//' |
      awk -v suite="$SUITE" '$1 == "deb" && $3 == suite { print $2; exit }' || true)
  fi
  echo "${m:-http://deb.debian.org/debian}"
}

command -v docker >/dev/null || { log "docker client not found (run hack/start-dockerd.sh)"; exit 1; }
docker info >/dev/null 2>&1 || { log "no Docker engine answers (run hack/start-dockerd.sh)"; exit 1; }

RECIPE="${SUITE}|${INCLUDE}|${RECIPE_VERSION}|$(uname -m)"
RECIPE_ID=$(printf '%s' "$RECIPE" | sha256sum | cut -c1-12)
TARBALL="$CACHE_DIR/base/daskflow-base-${SUITE}-py3.11-${RECIPE_ID}.tar.gz"

if [ "${FORCE:-0}" != 1 ] &&
  [ "$(docker image inspect --format '{{ index .Config.Labels "io.daskflow.base.recipe" }}' "$BASE_TAG" 2>/dev/null || true)" = "$RECIPE_ID" ]; then
  log "$BASE_TAG exists (recipe $RECIPE_ID); nothing to do"
  exit 0
fi

if [ "${FORCE:-0}" = 1 ] || [ ! -s "$TARBALL" ]; then
  command -v debootstrap >/dev/null || { log "debootstrap not found (run hack/start-dockerd.sh --install-only)"; exit 1; }
  MIRROR=$(debian_mirror)
  mkdir -p "$CACHE_DIR/base"
  ROOTFS=$(mktemp -d "$CACHE_DIR/base/rootfs.XXXXXX")
  cleanup() {
    # debootstrap mounts /proc and /sys in the target; never leave them behind.
    for m in proc sys dev/pts dev; do
      mountpoint -q "$ROOTFS/$m" 2>/dev/null && as_root umount -l "$ROOTFS/$m" || true
    done
    as_root rm -rf --one-file-system "$ROOTFS"
  }
  trap cleanup EXIT

  log "debootstrap $SUITE (minbase + $INCLUDE) from $MIRROR"
  as_root debootstrap --variant=minbase --components=main --include="$INCLUDE" \
    "$SUITE" "$ROOTFS" "$MIRROR" >"$CACHE_DIR/base/debootstrap.log" 2>&1 || {
    log "debootstrap failed; tail of $CACHE_DIR/base/debootstrap.log:"
    tail -n 30 "$CACHE_DIR/base/debootstrap.log" >&2
    exit 1
  }

  log "trimming the root filesystem"
  # Keep later `apt-get install`s in derived images slim too (as Debian's own slim images do).
  as_root tee "$ROOTFS/etc/dpkg/dpkg.cfg.d/docker-slim" >/dev/null <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
EOF
  as_root tee "$ROOTFS/etc/apt/apt.conf.d/docker-clean" >/dev/null <<'EOF'
APT::Install-Recommends "false";
Acquire::Languages "none";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
EOF
  as_root chroot "$ROOTFS" apt-get clean
  as_root find "$ROOTFS/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  as_root find "$ROOTFS/usr/share/doc" -mindepth 1 -type d -empty -delete
  as_root find "$ROOTFS/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
  as_root rm -rf "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/* "$ROOTFS"/usr/share/lintian \
    "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/cache/debconf/*-old \
    "$ROOTFS"/var/lib/dpkg/*-old "$ROOTFS"/var/log/* "$ROOTFS"/tmp/* "$ROOTFS"/var/tmp/* \
    "$ROOTFS"/etc/resolv.conf "$ROOTFS"/etc/hostname "$ROOTFS"/debootstrap
  as_root truncate -s 0 "$ROOTFS/etc/machine-id" 2>/dev/null || true
  # The image's apt sources (for derived images): the same mirror, main and updates.
  as_root tee "$ROOTFS/etc/apt/sources.list" >/dev/null <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
EOF

  log "packing $TARBALL"
  as_root tar --numeric-owner --xattrs --acls -C "$ROOTFS" -czf "$TARBALL.tmp" .
  mv -f "$TARBALL.tmp" "$TARBALL"
  cleanup
  trap - EXIT
  # Older recipes' tarballs are of no further use.
  find "$CACHE_DIR/base" -maxdepth 1 -name 'daskflow-base-*.tar.gz' ! -name "$(basename "$TARBALL")" -delete
else
  log "re-using cached root filesystem $TARBALL"
fi

PYVER=$(tar -xzOf "$TARBALL" ./var/lib/dpkg/status |
  awk '/^Package: python3.11-minimal$/ { p = 1 } p && /^Version:/ && v == "" { v = $2 } END { print v }')
log "importing $TARBALL as $BASE_TAG (python3.11 $PYVER)"
docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change "LABEL io.daskflow.base.recipe=$RECIPE_ID" \
  --change "LABEL io.daskflow.base.python=$PYVER" \
  --change "LABEL org.opencontainers.image.description=\"Debian $SUITE minbase with Python 3.11 (debootstrap), base for daskflow\"" \
  --change 'CMD ["python3"]' \
  --message "debootstrap $SUITE minbase + $INCLUDE" \
  "$TARBALL" "$BASE_TAG" >/dev/null
docker run --rm --network none "$BASE_TAG" python3 -c 'import sys, venv, ensurepip; print("python", sys.version.split()[0])'
log "done in ${SECONDS}s: $(docker image inspect --format '{{.Size}}' "$BASE_TAG" | awk '{ printf "%.0f MB", $1 / 1e6 }')"
