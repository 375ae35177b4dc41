"""The Kubernetes example keeps its promises: a loopback-only sidecar whose flags the real CLI
accepts, metrics and probes on a named port the PodMonitor scrapes, and the same rules as
alerts/ in a PrometheusRule that promtool accepts."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import _repo  # noqa: F401
import pytest
import yaml
from _repo import ROOT

from conftest import require_binary
from streamtap._cli import main
from streamtap._proxy_config import load_config
from streamtap.monitoring.rules import render

KUBE = ROOT / "deploy" / "kubernetes"


def _load(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((KUBE / name).read_text())
    return document


def _sidecar() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    deployment = _load("sidecar.yaml")
    pod = deployment["spec"]["template"]
    containers = {c["name"]: c for c in pod["spec"]["containers"]}
    return pod, containers["app"], containers["streamtap"]


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def _exec_form(dockerfile: str, instruction: str) -> list[str]:
    """The JSON-array value of a Dockerfile instruction, [] when the file has none."""
    for line in dockerfile.splitlines():
        if line.startswith(instruction + " "):
            value: list[str] = json.loads(line[len(instruction) + 1 :])
            return value
    return []


def _argv(container: dict[str, Any]) -> list[str]:
    """The command line Kubernetes runs for a container of the streamtap image.

    `command` replaces the image's ENTRYPOINT and drops its CMD; `args` alone replace the CMD.
    """
    dockerfile = (ROOT / "Dockerfile").read_text()
    entrypoint, cmd = _exec_form(dockerfile, "ENTRYPOINT"), _exec_form(dockerfile, "CMD")
    if "command" in container:
        return [*container["command"], *container.get("args", [])]
    return [*entrypoint, *container.get("args", cmd)]


def test_sidecar_runs_streamtap() -> None:
    _, _, sidecar = _sidecar()
    assert _argv(sidecar)[:2] == ["streamtap", "proxy"]
    assert _argv({"args": ["proxy"]}) == ["proxy"]  # what the image would run without `command`


def test_sidecar_flags_parse_and_keep_the_api_on_loopback() -> None:
    _, app, sidecar = _sidecar()
    args = _argv(sidecar)[1:]
    command = main.get_command(main.make_context("streamtap", args[:1]), args[0])
    assert command is not None
    context = command.make_context(args[0], args[1:])
    config = load_config(
        None,
        upstream=context.params["upstream"],
        listen=context.params["listen"],
        ops_listen=context.params["ops_listen"],
        upstream_api_key="sk-placeholder",
        client_token="token-placeholder",
    )
    assert config.host_port == ("127.0.0.1", 8787)
    assert _env(app)["OPENAI_BASE_URL"] == "http://127.0.0.1:8787/v1"
    # The sidecar holds the key; the app only has the token the sidecar requires.
    env = _env(sidecar)
    assert context.params["upstream_api_key_env"] in env
    assert context.params["client_token_env"] in env
    assert _env(app)["OPENAI_API_KEY"] == env[context.params["client_token_env"]]


def test_metrics_port_probes_and_podmonitor_agree() -> None:
    pod, _, sidecar = _sidecar()
    ports = {p["name"]: p["containerPort"] for p in sidecar["ports"]}
    ops_port = int(next(a for a in sidecar["args"] if a.startswith("--ops-listen=")).rsplit(":", 1)[1])
    assert ports == {"metrics": ops_port}
    # Never /readyz: it fails while the upstream does, and an unready sidecar takes the pod,
    # app included, out of its Service.
    assert sidecar["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert sidecar["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    monitor = _load("podmonitor.yaml")
    assert monitor["kind"] == "PodMonitor"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    # Each app in each namespace its own `job` (the rules and dashboards are per job), from a
    # label its pods carry.
    (relabel,) = endpoint["relabelings"]
    meta = {"__meta_kubernetes_namespace": "prod"} | {
        "__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", k): v
        for k, v in pod["metadata"]["labels"].items()
    }
    assert relabel["targetLabel"] == "job"
    assert relabel["sourceLabels"][0] == "__meta_kubernetes_namespace"
    job = relabel["separator"].join(meta[label] for label in relabel["sourceLabels"])
    assert job == f"prod/{pod['metadata']['labels']['app.kubernetes.io/name']}"
    assert (endpoint["port"], endpoint["path"]) == ("metrics", "/metrics")
    grace = int(next(a for a in sidecar["args"] if a.startswith("--shutdown-grace=")).split("=")[1])
    assert pod["spec"]["terminationGracePeriodSeconds"] > grace


def test_prometheus_rule_is_fresh_and_valid(tmp_path: Path) -> None:
    rule = _load("prometheusrule.yaml")
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"] == render()
    fresh = subprocess.run(
        [sys.executable, str(KUBE / "generate.py"), "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert fresh.returncode == 0, fresh.stderr
    promtool = require_binary("promtool")
    spec = tmp_path / "spec.yml"
    spec.write_text(yaml.safe_dump(rule["spec"]))
    checked = subprocess.run([promtool, "check", "rules", str(spec)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize("name", ["sidecar.yaml", "podmonitor.yaml", "prometheusrule.yaml"])
def test_manifests_name_their_kind(name: str) -> None:
    document = _load(name)
    assert {"apiVersion", "kind", "metadata", "spec"} <= document.keys()
