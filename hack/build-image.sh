#!/usr/bin/env bash
# Builds the daskflow image without the internet inside the build:
#   1. fills a wheelhouse on the host (pip, which reaches PyPI here), cached in
#      ~/.cache/daskflow/wheelhouse/<key>/, key = hash of constraints.txt, the
#      dependency list of pyproject.toml and the Python/platform tag;
#   2. streams a build context made of the files the Dockerfile needs plus that
#      wheelhouse (as wheelhouse/) to `docker build --network=none -`, where pip
#      installs with PIP_NO_INDEX=1 --find-links /wheelhouse.
# The wheelhouse never enters the git tree.
#
# Usage: hack/build-image.sh [extra docker build args...]
# Environment:
#   IMAGE       tag to build                (default daskflow:dev)
#   BASE_IMAGE  base image                  (default python:3.11-slim; here: daskflow-base:py3.11,
#                                            see hack/build-base-image.sh)
#   PYTHON      host Python 3.11 for pip    (default .venv/bin/python, else python3)
#   CACHE_DIR   cache directory             (default ~/.cache/daskflow)
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

IMAGE="${IMAGE:-daskflow:dev}"
BASE_IMAGE="${BASE_IMAGE:-python:3.11-slim}"
CACHE_DIR="${CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/daskflow}"
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi

log() { echo "build-image: $*" >&2; }

# The wheels must fit the image's Python (3.11), so the host's pip must run on 3.11 too.
PYTAG=$("$PYTHON" -c 'import sys, platform; print(f"cp{sys.version_info[0]}{sys.version_info[1]}-{platform.machine()}")')
case "$PYTAG" in
  cp311-*) ;;
  *) log "$PYTHON is $PYTAG; the image runs Python 3.11: set PYTHON to a Python 3.11"; exit 1 ;;
esac

# What goes into the image: the runtime dependencies (not the dev extra) and the
# build backend that `pip install .` needs in its isolated build environment.
REQS=$("$PYTHON" - <<'EOF'
import tomllib
with open("pyproject.toml", "rb") as f:
    d = tomllib.load(f)
for r in d["project"]["dependencies"] + d["build-system"]["requires"] + ["wheel"]:
    print(r)
EOF
)
KEY=$({ cat constraints.txt; printf '%s\n' "$REQS" "$PYTAG"; } | sha256sum | cut -c1-16)
WHEELHOUSE="$CACHE_DIR/wheelhouse/$KEY"

if [ -f "$WHEELHOUSE/.complete" ]; then
  log "wheelhouse $WHEELHOUSE is cached ($(find "$WHEELHOUSE" -name '*.whl' | wc -l) wheels)"
else
  log "filling wheelhouse $WHEELHOUSE"
  mkdir -p "$CACHE_DIR/wheelhouse"
  tmp=$(mktemp -d "$CACHE_DIR/wheelhouse/.tmp.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  printf '%s\n' "$REQS" >"$tmp/requirements.txt"
  # `pip wheel` downloads wheels as they are and builds the few sdists into wheels.
  "$PYTHON" -m pip wheel --quiet --wheel-dir "$tmp/wheels" \
    -c constraints.txt -r "$tmp/requirements.txt"
  touch "$tmp/wheels/.complete"
  rm -rf "$WHEELHOUSE"
  mv "$tmp/wheels" "$WHEELHOUSE"
  rm -rf "$tmp"
  trap - EXIT
  log "wheelhouse ready in ${SECONDS}s: $(find "$WHEELHOUSE" -name '*.whl' | wc -l) wheels, $(du -sh "$WHEELHOUSE" | cut -f1)"
fi

# The build context, allow-listed (.dockerignore keeps the same out of a plain `docker build .`).
ctx=(Dockerfile pyproject.toml constraints.txt operator docker)
for f in README.md LICENSE; do
  [ -e "$f" ] && ctx+=("$f")
done

VERSION=$("$PYTHON" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
REVISION=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)

started=$SECONDS
log "building $IMAGE from $BASE_IMAGE (daskflow $VERSION, $REVISION), network none"
tar -c --owner=0 --group=0 --numeric-owner \
  --exclude=__pycache__ --exclude='*.pyc' --exclude='*.egg-info' --exclude=.complete \
  --transform "s,^$KEY,wheelhouse," \
  -C "$REPO" "${ctx[@]}" -C "$CACHE_DIR/wheelhouse" "$KEY" |
  docker build --network=none --force-rm \
    --build-arg "BASE_IMAGE=$BASE_IMAGE" \
    --build-arg "VERSION=$VERSION" \
    --build-arg "REVISION=$REVISION" \
    --tag "$IMAGE" "$@" -
log "built $IMAGE in $((SECONDS - started))s: $(docker image inspect --format '{{.Size}}' "$IMAGE" | awk '{ printf "%.0f MB", $1 / 1e6 }')"
