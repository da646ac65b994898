"""daskflow: declarative Python flows on ephemeral Dask clusters.

The package is layered, and imports flow one way (enforced by import-linter):
``model`` (manifest, references, states, status) -> ``engine`` (runs a flow on any
Dask cluster) -> ``kube`` (operator, runner, Kubernetes objects) -> ``cli``.
"""

__version__ = "0.1.0"
