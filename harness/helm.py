"""helm for the tests: the binary hack/build-helm.sh builds (cached), and a small runner
with a private HELM_*_HOME, shared by the chart tests and the end-to-end tier.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "daskflow"


def _cache_root() -> Path:
    base = os.environ.get("DASKFLOW_CACHE")
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "daskflow"


def _helm_version(path: Path) -> str | None:
    try:
        out = subprocess.run(
            [str(path), "version", "--template", "{{.Version}}"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except OSError:
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def find_or_build_helm() -> Path:
    candidates = [Path(p) for p in (os.environ.get("DASKFLOW_HELM"),) if p]
    candidates.append(_cache_root() / "bin" / "helm")
    for path in candidates:
        if path.is_file() and _helm_version(path):
            return path
    on_path = shutil.which("helm")
    if on_path and (_helm_version(Path(on_path)) or "").startswith("v3."):
        return Path(on_path)
    problem = "helm is missing"
    if shutil.which("go"):
        build = subprocess.run(
            ["bash", str(ROOT / "hack" / "build-helm.sh")],
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
        built = _cache_root() / "bin" / "helm"
        if build.returncode == 0 and built.is_file():
            return built
        problem = f"hack/build-helm.sh failed:\n{(build.stdout + build.stderr)[-2000:]}"
    else:
        problem += " and Go is not installed to build it (hack/build-helm.sh)"
    if os.environ.get("CI"):
        pytest.fail(problem, pytrace=False)
    pytest.skip(problem)


@dataclass
class Helm:
    path: Path
    home: Path

    def run(
        self,
        *args: str,
        kubeconfig: Path | None = None,
        check: bool = True,
        timeout: float = 300,
    ) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HELM_", "KUBECONFIG"))}
        for name in ("CACHE", "CONFIG", "DATA"):
            env[f"HELM_{name}_HOME"] = str(self.home / name.lower())
        argv = [str(self.path), *args]
        if kubeconfig is not None:
            argv.append(f"--kubeconfig={kubeconfig}")
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"helm {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def values_file(self, values: dict[str, Any]) -> Path:
        path = self.home / f"values-{secrets.token_hex(4)}.yaml"
        path.write_text(yaml.safe_dump(values))
        return path

    def template(
        self,
        values: dict[str, Any],
        namespace: str = "daskflow-system",
        release: str = "daskflow",
        *extra: str,
    ) -> str:
        return self.run(
            "template",
            release,
            str(CHART),
            "-n",
            namespace,
            "-f",
            str(self.values_file(values)),
            *extra,
        ).stdout

    def render(
        self, values: dict[str, Any], namespace: str = "daskflow-system", *extra: str
    ) -> list[dict[str, Any]]:
        return [
            d for d in yaml.safe_load_all(self.template(values, namespace, "daskflow", *extra)) if d
        ]
