"""Run a real Prometheus, a real Alertmanager and a webhook receiver on 127.0.0.1.

Used by `streamtap demo` (its optional alerting stack) and by the live tests. Each server gets
its own config and data directory and a free port; `stop()` (or leaving the context manager)
terminates it and waits. The binaries are found on PATH (Debian names: `prometheus`,
`prometheus-alertmanager`) unless a path is passed; tests pass `require_binary(...)`'s answer so a
machine without them skips.

    with WebhookReceiver() as hook, run_alertmanager(tmp_path / "am", hook.url) as am, \
         run_prometheus(tmp_path / "prom", ["127.0.0.1:9464"], rule_files=[rules],
                        alertmanager=am.address) as prom:
        prom.wait_for('up == 1')
        hook.wait_for(lambda alerts: any(a["labels"]["alertname"] == "X" for a in alerts))
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

STARTUP_TIMEOUT = 30.0
PROMETHEUS_NAMES = ("prometheus",)
ALERTMANAGER_NAMES = ("alertmanager", "prometheus-alertmanager")


def find_binary(*names: str) -> str | None:
    """The path of the first of `names` on PATH, or None.

    Args:
        names: executable names to try in order.
    """
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    return None


def _binary(given: str | None, names: tuple[str, ...]) -> str:
    found = given or find_binary(*names)
    if found is None:
        raise FileNotFoundError(
            f"{' or '.join(names)} not on PATH; install it (Debian: apt-get install prometheus "
            "prometheus-alertmanager) or pass its path"
        )
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@dataclass
class Server:
    """A running server process: its address, working directory and log."""

    name: str
    process: subprocess.Popen[bytes]
    address: str  # host:port
    workdir: Path
    log: Path

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the server's log, for failure messages."""
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        """Poll /-/ready until it answers 200; raise with the log tail if the process dies or times out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError):
                if _get(f"{self.url}/-/ready", timeout=1.0)[0] == 200:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} not ready after {timeout}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the process and wait for it (kill if it does not exit in `timeout`)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)


def _spawn(name: str, argv: list[str], workdir: Path, address: str) -> Server:
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=workdir)
    return Server(name, process, address, workdir, log)


class Prometheus(Server):
    """A running Prometheus with helpers for its HTTP API."""

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Evaluate an instant query now and return its `data.result`.

        Args:
            expr: the PromQL expression.
        """
        status, body = _get(f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")
        payload = json.loads(body)
        if status != 200 or payload.get("status") != "success":
            raise RuntimeError(f"query {expr!r} failed ({status}): {payload.get('error', body[:300])}")
        result: list[dict[str, Any]] = payload["data"]["result"]
        return result

    def get(self, path: str) -> Any:
        """GET an API path such as /api/v1/rules and return its `data` (a dict or a list)."""
        status, body = _get(f"{self.url}{path}")
        payload = json.loads(body)
        if status != 200:
            raise RuntimeError(f"GET {path} failed ({status}): {payload}")
        return payload["data"]

    def wait_for(
        self,
        expr: str,
        predicate: Callable[[list[dict[str, Any]]], bool] = bool,
        timeout: float = 20.0,
    ) -> list[dict[str, Any]]:
        """Re-run `expr` until `predicate(result)` holds (default: non-empty); return that result.

        Args:
            expr: the PromQL expression.
            predicate: what the result must satisfy.
            timeout: seconds before TimeoutError (which shows the last result).
        """
        deadline = time.monotonic() + timeout
        result: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            result = self.query(expr)
            if predicate(result):
                return result
            time.sleep(0.2)
        raise TimeoutError(f"{expr!r} never satisfied the predicate in {timeout}s; last result: {result}")


def prometheus_config(
    targets: Sequence[str],
    *,
    job: str = "streamtap",
    rule_files: Sequence[Path] = (),
    alertmanager: str | None = None,
    scrape_interval: str = "1s",
    evaluation_interval: str = "1s",
) -> dict[str, Any]:
    """The prometheus.yml a live test needs.

    Args:
        targets: host:port scrape targets of the one job.
        job: the job label of those targets.
        rule_files: absolute paths of rule files.
        alertmanager: host:port of an Alertmanager to send alerts to.
        scrape_interval: scrape interval.
        evaluation_interval: rule evaluation interval.
    """
    config: dict[str, Any] = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": evaluation_interval},
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": list(targets)}]}],
        "rule_files": [str(p) for p in rule_files],
    }
    if alertmanager:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    return config


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
    binary: str | None = None,
) -> Iterator[Prometheus]:
    """Start Prometheus (exemplar storage on) on a free port, wait until ready, stop it on exit.

    Args:
        workdir: a directory for its config, data and log (created).
        targets: host:port scrape targets, all under `job`.
        job: the job label of the targets.
        rule_files: rule files to load (copied into workdir so the config is self-contained).
        alertmanager: host:port of an Alertmanager.
        scrape_interval: scrape interval.
        evaluation_interval: rule evaluation interval.
        binary: the prometheus executable; default: found on PATH.
    """
    executable = _binary(binary, PROMETHEUS_NAMES)
    workdir.mkdir(parents=True, exist_ok=True)
    copies = []
    for i, rules in enumerate(rule_files):
        copy = workdir / f"rules-{i}-{rules.name}"
        shutil.copyfile(rules, copy)
        copies.append(copy)
    config = workdir / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            prometheus_config(
                targets,
                job=job,
                rule_files=copies,
                alertmanager=alertmanager,
                scrape_interval=scrape_interval,
                evaluation_interval=evaluation_interval,
            )
        )
    )
    address = f"127.0.0.1:{free_port()}"
    argv = [
        executable,
        f"--config.file={config}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address={address}",
        "--enable-feature=exemplar-storage",
        # Alerts reach Alertmanager within a second instead of the default one minute resend delay.
        "--rules.alert.resend-delay=1s",
        "--log.level=warn",
    ]
    server = _spawn("prometheus", argv, workdir, address)
    prometheus = Prometheus(server.name, server.process, server.address, server.workdir, server.log)
    try:
        prometheus.wait_ready()
        yield prometheus
    finally:
        prometheus.stop()


def alertmanager_config(webhook_url: str, *, group_wait: str = "1s") -> dict[str, Any]:
    """An Alertmanager config routing every alert to one webhook, quickly.

    Args:
        webhook_url: where notifications are POSTed.
        group_wait: how long a new group waits before its first notification.
    """
    return {
        "route": {
            "receiver": "webhook",
            "group_by": ["alertname"],
            "group_wait": group_wait,
            "group_interval": "1s",
            "repeat_interval": "1h",
        },
        "receivers": [{"name": "webhook", "webhook_configs": [{"url": webhook_url, "send_resolved": True}]}],
    }


@contextlib.contextmanager
def run_alertmanager(
    workdir: Path,
    webhook_url: str,
    *,
    group_wait: str = "1s",
    binary: str | None = None,
    config: Mapping[str, Any] | None = None,
) -> Iterator[Server]:
    """Start Alertmanager (clustering off) routing everything to `webhook_url`; stop it on exit.

    Args:
        workdir: a directory for its config, data and log (created).
        webhook_url: the receiver URL, e.g. `WebhookReceiver.url`.
        group_wait: how long a new alert group waits before it is sent.
        binary: the alertmanager executable; default: found on PATH.
        config: the whole configuration to run instead of one routing everything to
            `webhook_url` (e.g. alerts/alertmanager.yml with its receivers pointed at a
            `WebhookReceiver`, to test its routes and inhibit rules).
    """
    executable = _binary(binary, ALERTMANAGER_NAMES)
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "alertmanager.yml"
    chosen = alertmanager_config(webhook_url, group_wait=group_wait) if config is None else dict(config)
    path.write_text(yaml.safe_dump(chosen))
    address = f"127.0.0.1:{free_port()}"
    argv = [
        executable,
        f"--config.file={path}",
        f"--storage.path={workdir / 'data'}",
        f"--web.listen-address={address}",
        "--cluster.listen-address=",  # no gossip port: one instance, loopback only
        "--log.level=warn",
    ]
    server = _spawn("alertmanager", argv, workdir, address)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@dataclass
class WebhookReceiver:
    """A threaded HTTP server on 127.0.0.1 collecting Alertmanager webhook notifications."""

    notifications: list[dict[str, Any]] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("WebhookReceiver is not started; use it as a context manager")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/alerts"

    def alerts(self) -> list[dict[str, Any]]:
        """Every alert of every notification received so far, in arrival order."""
        with self._cond:
            return [alert for n in self.notifications for alert in n.get("alerts", [])]

    def wait_for(self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 20.0) -> None:
        """Block until `predicate(self.alerts())` holds.

        Args:
            predicate: called with every alert received so far.
            timeout: seconds before TimeoutError.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.alerts()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"webhook: predicate not met in {timeout}s; got {self.notifications}")
                self._cond.wait(remaining)

    def __enter__(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._cond:
                    receiver.notifications.append(json.loads(body))
                    receiver._cond.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
