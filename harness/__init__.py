"""What the tests and the benchmarks share to start, watch and stop the real parts they run
against, as a public API:

- ``processes``: child processes in their own process group, stopped as a whole tree with a
  psutil check that nothing is left; free loopback ports;
- ``waiting``: polling for a condition, with a timeout that says what was awaited and the
  last value seen;
- ``controlplane``: etcd and kube-apiserver on loopback (a real Kubernetes API);
- ``kube``: the CRDs, RBAC and ``daskflow operator`` run against such a cluster;
- ``helm``: the helm binary and a runner with a private home;
- ``hack``: the repository's hack/ scripts (image builds, ``hack/cluster.sh``);
- ``realcluster``: that single-node cluster with the chart installed (the e2e tier).

It lives outside ``tests/`` so that ``benchmarks/`` uses the same code as the tests without
importing test modules.
"""
