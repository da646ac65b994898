#!/usr/bin/env bash
# Debian packages for the Docker image tests (tests/docker): docker.io and debootstrap.
# Installs only; the tests start dockerd themselves (hack/start-dockerd.sh).
set -euo pipefail
exec bash "$(dirname "$0")/../start-dockerd.sh" --install-only
