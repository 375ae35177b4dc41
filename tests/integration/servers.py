"""Live-test helpers: streamtap.monitoring._servers with binaries from `require_binary`.

A machine without prometheus/alertmanager skips these tests (CI, which installs them, fails).

    with WebhookReceiver() as hook, run_alertmanager(tmp_path / "am", hook.url) as am, \\
         run_prometheus(tmp_path / "prom", ["127.0.0.1:9464"], rule_files=[rules],
                        alertmanager=am.address) as prom:
        prom.wait_for('up == 1')
        hook.wait_for(lambda alerts: any(a["labels"]["alertname"] == "X" for a in alerts))
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

from conftest import require_binary
from streamtap.monitoring import _servers
from streamtap.monitoring._servers import (
    ALERTMANAGER_NAMES,
    PROMETHEUS_NAMES,
    STARTUP_TIMEOUT,
    Prometheus,
    Server,
    WebhookReceiver,
    alertmanager_config,
    free_port,
    prometheus_config,
)

__all__ = [
    "STARTUP_TIMEOUT",
    "Prometheus",
    "Server",
    "WebhookReceiver",
    "alertmanager_config",
    "free_port",
    "prometheus_config",
    "run_alertmanager",
    "run_prometheus",
]


@contextlib.contextmanager
def run_prometheus(
    workdir: Path,
    targets: Sequence[str],
    *,
    job: str = "streamtap",
    rule_files: Sequence[Path] = (),
    alertmanager: str | None = None,
    scrape_interval: str = "1s",
    evaluation_interval: str = "1s",
) -> Iterator[Prometheus]:
    """`_servers.run_prometheus` with the binary from `require_binary` (skip, or fail under CI)."""
    with _servers.run_prometheus(
        workdir,
        targets,
        job=job,
        rule_files=rule_files,
        alertmanager=alertmanager,
        scrape_interval=scrape_interval,
        evaluation_interval=evaluation_interval,
        binary=require_binary(*PROMETHEUS_NAMES),
    ) as prometheus:
        yield prometheus


@contextlib.contextmanager
def run_alertmanager(workdir: Path, webhook_url: str, *, group_wait: str = "1s") -> Iterator[Server]:
    """`_servers.run_alertmanager` with the binary from `require_binary` (skip, or fail under CI)."""
    with _servers.run_alertmanager(
        workdir, webhook_url, group_wait=group_wait, binary=require_binary(*ALERTMANAGER_NAMES)
    ) as alertmanager:
        yield alertmanager
