"""The machine proxy_load.py runs on: how its CPUs are shared between the processes (the proxy
under test on a core of its own), and what the report says of it (CPU, Python, the versions of
the packages in play, the load average).
"""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path
from typing import Any

import _load_procs as procs


def environment(litellm: str | None) -> dict[str, Any]:
    """The CPU, Python, the packages' versions (LiteLLM's too, given its executable), the load average."""
    from importlib.metadata import PackageNotFoundError, version

    def ver(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor(),
    )  # fmt: skip
    packages = {
        n: ver(n)
        for n in (
            "streamtap",
            "uvicorn",
            "h11",
            "httptools",
            "uvloop",
            "httpx2",
            "prometheus-client",
            "opentelemetry-sdk",
        )
    }
    if litellm:
        packages["litellm"] = procs.litellm_version(litellm)
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "packages": packages,
        "loadavg_before": os.getloadavg()[0],  # other work on the machine competes for the same cores
    }


def pinning(args: argparse.Namespace) -> dict[str, set[int] | None]:
    """The CPUs of the fake upstream, the load generator and the target; None: any (`--no-pin`, one CPU)."""
    cpus = sorted(os.sched_getaffinity(0))
    if args.no_pin or len(cpus) < 2:
        return {"fake": None, "client": None, "target": None}
    # The proxy under test gets a core of its own; the fake upstream and the load generator share the rest.
    return {"fake": set(cpus[:-1]), "client": set(cpus[:-1]), "target": {cpus[-1]}}
