#!/bin/sh
# Entry point of the daskflow image (installed as /opt/daskflow/bin/daskflow-entrypoint).
#
#   docker run IMAGE                        -> daskflow operator        (the default CMD)
#   docker run IMAGE run flow.yaml          -> daskflow run flow.yaml
#   docker run IMAGE --help                 -> daskflow --help
#   docker run IMAGE dask scheduler ...     -> dask scheduler ...       (passed through)
#   docker run IMAGE dask-worker tcp://...  -> dask-worker tcp://...    (passed through)
#   docker run IMAGE python3 -c ...         -> python3 -c ...           (passed through)
#
# The pass-through is what lets the same image serve as the Dask scheduler and worker
# image: dask-kubernetes builds those pods with `args: [dask-scheduler, ...]` and
# `args: [dask-worker, ...]`, keeping the image's entrypoint.
set -e
case "${1:-}" in
  daskflow | dask | dask-* | python | python3 | python3.* | sh | bash | /*)
    exec "$@"
    ;;
esac
exec daskflow "$@"
