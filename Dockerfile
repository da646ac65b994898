# The daskflow image: the operator, the flow runner, and the Dask scheduler/worker image
# of the clusters it starts, all in one (so `distributed` is the same version everywhere).
#
#   docker run IMAGE                      -> daskflow operator
#   docker run IMAGE run flow.yaml        -> daskflow run flow.yaml
#   docker run IMAGE dask scheduler       -> dask scheduler      (also dask-scheduler, dask-worker)
#
# Build it with hack/build-image.sh: the build needs no network. pip installs only from a
# wheelhouse/ folder in the build context (PIP_NO_INDEX=1), which that script fills on the host
# and streams in with the sources. See docs/docker.md.
#
# No `# syntax=` line on purpose: it would pull a frontend image. Works with the classic
# builder and with BuildKit.

# A slim Python 3.11 image: the official one, or the debootstrap-built daskflow-base:py3.11
# (hack/build-base-image.sh) where no registry can be reached.
ARG BASE_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS builder

# Offline install: only the wheelhouse. Set PIP_NO_INDEX=0 (with an empty wheelhouse/) to
# build against an index instead.
ARG PIP_NO_INDEX=1
ENV PIP_NO_INDEX=${PIP_NO_INDEX} \
    PIP_FIND_LINKS=/wheelhouse \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python3 -m venv /opt/daskflow

# Dependencies first, in their own layer: rebuilt only when the pins or the dependency list
# change, not on every source edit.
COPY wheelhouse/ /wheelhouse/
WORKDIR /src
COPY pyproject.toml constraints.txt ./
RUN python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
        > requirements.txt \
 && /opt/daskflow/bin/pip install -c constraints.txt -r requirements.txt

# The package itself (not editable), built from the sources with the pinned build backend
# from the wheelhouse. README.md is optional in the context: pyproject.toml names it as the
# long description, so an empty one stands in when it is missing.
COPY README.m[d] pyproject.toml ./
COPY operator/ operator/
RUN test -f README.md || : > README.md \
 && /opt/daskflow/bin/pip install --no-deps -c constraints.txt . \
 && /opt/daskflow/bin/pip check

# The image's entry point, and the dask-scheduler / dask-worker commands that dask-kubernetes
# pod specs run (distributed itself only ships `dask scheduler` / `dask worker` now).
COPY docker/entrypoint.sh /opt/daskflow/bin/daskflow-entrypoint
RUN printf '#!/bin/sh\nexec /opt/daskflow/bin/dask scheduler "$@"\n' > /opt/daskflow/bin/dask-scheduler \
 && printf '#!/bin/sh\nexec /opt/daskflow/bin/dask worker "$@"\n' > /opt/daskflow/bin/dask-worker \
 && chmod 0755 /opt/daskflow/bin/daskflow-entrypoint /opt/daskflow/bin/dask-scheduler \
        /opt/daskflow/bin/dask-worker

# ---------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE}

# A fixed, numeric, non-root user: Kubernetes' runAsNonRoot can verify it, and volumes can be
# prepared for it. The installed files stay root-owned and read-only for it.
ARG UID=10001
RUN groupadd --system --gid "${UID}" daskflow \
 && useradd --system --uid "${UID}" --gid "${UID}" --home-dir /home/daskflow --create-home \
        --shell /usr/sbin/nologin daskflow

COPY --from=builder /opt/daskflow /opt/daskflow

# PYTHONDONTWRITEBYTECODE: pip compiled the bytecode at install time, and the root filesystem
# may be read-only (docker run --read-only, readOnlyRootFilesystem). Dask workers spill to
# the temporary directory: give them a writable /tmp (--tmpfs /tmp, or an emptyDir) then.
ENV PATH=/opt/daskflow/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/daskflow

WORKDIR /home/daskflow
USER ${UID}:${UID}

ENTRYPOINT ["daskflow-entrypoint"]
CMD ["operator"]

# Last, so a new revision changes only this metadata layer.
ARG VERSION=0.0.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="daskflow" \
      org.opencontainers.image.description="daskflow operator, flow runner and Dask scheduler/worker image" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
