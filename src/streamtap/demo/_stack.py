"""The demo's optional alerting stack: a real Prometheus and Alertmanager on loopback.

Prometheus scrapes the demo's /metrics every second and evaluates streamtap's rules,
time-compressed so they can fire within the run; Alertmanager delivers to a webhook receiver
inside the demo, which is how the demo learns that an alert fired or resolved.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from ..monitoring._servers import (
    ALERTMANAGER_NAMES,
    PROMETHEUS_NAMES,
    Prometheus,
    Server,
    WebhookReceiver,
    find_binary,
    run_alertmanager,
    run_prometheus,
)
from ..monitoring.rules import Params, dump, render

HOW_TO_GET = (
    "No Prometheus/Alertmanager on PATH, so no alerts in this run. To see the alerts fire: "
    "`docker compose up` (Grafana on http://localhost:3000), or install the two packages "
    "(Debian/Ubuntu: `sudo apt-get install prometheus prometheus-alertmanager`) and run the demo again."
)


def binaries() -> tuple[str, str] | None:
    """The prometheus and alertmanager executables on PATH, or None if either is missing."""
    prometheus = find_binary(*PROMETHEUS_NAMES)
    alertmanager = find_binary(*ALERTMANAGER_NAMES)
    return (prometheus, alertmanager) if prometheus and alertmanager else None


def install() -> tuple[str, str] | str:
    """Install both with apt-get when running as root; return the binaries or why not.

    apt-get's own output goes to the terminal (stderr), so the user sees the progress.
    """
    if shutil.which("apt-get") is None:
        return "--stack: prometheus/alertmanager are not on PATH and apt-get is not available; " + HOW_TO_GET
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return (
            "--stack: prometheus/alertmanager are not on PATH; install them with "
            "`sudo apt-get install prometheus prometheus-alertmanager` (the demo only installs as root)"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = ["apt-get", "install", "-y", "--no-install-recommends", "prometheus", "prometheus-alertmanager"]
    for attempt in range(2):
        if attempt:  # an empty or stale package index is the usual reason the first try fails
            subprocess.run(["apt-get", "update"], env=env, stdout=subprocess.DEVNULL, check=False)
        done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, check=False)
        found = binaries()
        if done.returncode == 0 and found:
            return found
    return "--stack: `apt-get install prometheus prometheus-alertmanager` failed; see its messages above"


def scrape_target(addr: str, port: int) -> str:
    """The host:port Prometheus scrapes for a metrics server bound to `addr`.

    Args:
        addr: the interface the metrics server listens on ("0.0.0.0" and "::" mean all).
        port: its port.
    """
    if addr in ("", "0.0.0.0", "127.0.0.1", "localhost"):
        return f"127.0.0.1:{port}"
    if addr in ("::", "::1"):
        return f"[::1]:{port}"
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


class AlertStack:
    """Prometheus + Alertmanager + the webhook receiver, started and stopped together.

    Args:
        target: host:port of the demo's /metrics.
        compression: the rules' time compression (e.g. 60: a 5 s spike window).
        prometheus: the prometheus executable.
        alertmanager: the alertmanager executable.
    """

    def __init__(self, target: str, compression: float, prometheus: str, alertmanager: str) -> None:
        self.target = target
        self.compression = compression
        self._binaries = (prometheus, alertmanager)
        self._exit = contextlib.ExitStack()
        self.webhook = WebhookReceiver()
        self.prometheus: Prometheus | None = None
        self.alertmanager: Server | None = None

    def start(self) -> AlertStack:
        """Start everything (each waits until ready); on failure stop what started and raise."""
        try:
            workdir = Path(self._exit.enter_context(tempfile.TemporaryDirectory(prefix="streamtap-demo-")))
            rules = workdir / "streamtap.rules.yml"
            rules.write_text(dump(render(Params().compressed(self.compression))))
            self._exit.enter_context(self.webhook)
            self.alertmanager = self._exit.enter_context(
                run_alertmanager(workdir / "alertmanager", self.webhook.url, binary=self._binaries[1])
            )
            self.prometheus = self._exit.enter_context(
                run_prometheus(
                    workdir / "prometheus",
                    [self.target],
                    rule_files=[rules],
                    alertmanager=self.alertmanager.address,
                    binary=self._binaries[0],
                )
            )
        except BaseException:
            self._exit.close()
            raise
        return self

    def alerts(self) -> list[dict[str, Any]]:
        """Every alert the webhook received so far, in arrival order."""
        return self.webhook.alerts()

    def stop(self) -> None:
        """Stop Prometheus, Alertmanager and the webhook (in that order) and delete their files."""
        self._exit.close()
        self.prometheus = self.alertmanager = None
