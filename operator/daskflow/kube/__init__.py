"""Kubernetes glue: the kopf operator, the per-run runner, and the objects they create.

Builders (:mod:`.builders`) are pure; everything that talks to the API server goes
through :mod:`.api`, so the rest of the layer can be read and tested without a cluster.
"""
