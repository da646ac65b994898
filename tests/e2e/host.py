"""What the single-node cluster (hack/cluster.sh) leaves on the host, to prove ``down`` clean.

``HostState.capture()`` records everything ``up`` may create or change: the cluster's
processes (its components, which name its directory on their command lines, and anything
in the kubelet's ``kubepods`` cgroups), network links, policy-routing rules, routes,
iptables chains, mounts, host directories and kernel settings. ``leftovers(before)``
compares a capture taken after ``down`` with one taken before ``up``.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psutil

CLUSTER_DIR = Path(os.environ.get("DASKFLOW_CLUSTER_DIR", "/run/daskflow-cluster"))
POD_CIDR = "10.244.0.0/24"
SERVICE_CIDR = "10.96.0.0/16"
ROUTING_TABLE = "30244"
# Where the kubelet, containerd and the CNI plugins write whatever their configuration says.
HOST_PATHS = (
    "/var/lib/cni",
    "/var/lib/kubelet",
    "/var/log/containers",
    "/var/log/pods",
    "/run/netns",
)
# Kernel settings that change by themselves, or with whatever else runs on the machine.
_VOLATILE_SYSCTL = re.compile(
    r"^(kernel\.random\.|kernel\.ns_last_pid|kernel\.pty\.nr|fs\.|net\.netfilter\.nf_conntrack_count"
    r"|kernel\.tainted|vm\.stat_refresh|vm\.drop_caches)"
)
# The cluster's own programs (process names are cut at 15 characters); clients such as
# kubectl or helm also name its directory (the kubeconfig), and are not the cluster.
_COMPONENTS = (
    "containerd",
    "etcd",
    "kube-apiserver",
    "kube-controller",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
)
_SYSCTL_TREES = ("net/ipv4", "net/bridge", "net/netfilter", "vm", "kernel")


def _run(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=False).stdout


def _cluster_processes() -> list[str]:
    found = []
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
            cgroups = Path(f"/proc/{proc.pid}/cgroup").read_text()
        except (psutil.Error, OSError):
            continue
        ours = str(CLUSTER_DIR) in cmdline and (proc.info["name"] or "").startswith(_COMPONENTS)
        if ours or "/kubepods" in cgroups:
            found.append(f"{proc.pid} {proc.info['name']}: {cmdline[:120]}")
    return found


def _sysctls() -> dict[str, str]:
    values = {}
    for tree in _SYSCTL_TREES:
        for dirpath, _, files in os.walk(f"/proc/sys/{tree}"):
            for name in files:
                path = os.path.join(dirpath, name)
                key = path.removeprefix("/proc/sys/").replace("/", ".")
                if _VOLATILE_SYSCTL.match(key):
                    continue
                try:
                    values[key] = Path(path).read_text().strip()
                except OSError:  # write-only, or gone meanwhile
                    continue
    return values


@dataclass(frozen=True)
class HostState:
    processes: list[str]
    links: list[str]
    rules: list[str]
    routes: list[str]
    chains: list[str]
    mounts: list[str]
    paths: list[str]
    sysctls: dict[str, str]
    cluster_dir: bool

    @classmethod
    def capture(cls) -> HostState:
        links = [
            line.split(":")[1].strip()
            for line in _run("ip", "-o", "link", "show").splitlines()
            if ":" in line
        ]
        cluster_nets = (POD_CIDR, SERVICE_CIDR)
        return cls(
            processes=_cluster_processes(),
            links=[name for name in links if name == "cni0" or name.startswith("veth")],
            rules=[r for r in _run("ip", "rule", "show").splitlines() if POD_CIDR in r],
            routes=[
                r
                for r in _run("ip", "route", "show", "table", "all").splitlines()
                if any(net in r for net in cluster_nets)
                or "cni0" in r
                or f"table {ROUTING_TABLE}" in r
            ],
            chains=[
                line
                for save in ("iptables-save", "ip6tables-save")
                for line in _run(save).splitlines()
                if line.startswith(":") and re.match(r":(KUBE-|CNI-)", line)
            ],
            mounts=[
                line
                for line in Path("/proc/self/mounts").read_text().splitlines()
                if str(CLUSTER_DIR) in line or "/run/netns/cni-" in line
            ],
            paths=[p for p in HOST_PATHS if os.path.lexists(p)],
            sysctls=_sysctls(),
            cluster_dir=CLUSTER_DIR.exists(),
        )

    def leftovers(self, before: HostState) -> list[str]:
        """What this (later) state has of the cluster's that ``before`` did not."""
        found = [f"{CLUSTER_DIR} exists"] if self.cluster_dir and not before.cluster_dir else []
        for what in ("processes", "links", "rules", "routes", "chains", "mounts", "paths"):
            old = set(getattr(before, what))
            found += [f"{what}: {item}" for item in getattr(self, what) if item not in old]
        found += [
            f"sysctl {key}: {value} before, {self.sysctls[key]} now"
            for key, value in before.sysctls.items()
            if key in self.sysctls and self.sysctls[key] != value
        ]
        return found
