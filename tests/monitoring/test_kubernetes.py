"""The Kubernetes example keeps its promises: a loopback-only native sidecar whose flags the real
CLI accepts, that stops after the app within the pod's grace, a pod that passes the "restricted"
Pod Security Standard, metrics and probes on a named port the PodMonitor scrapes in every
namespace, and the same rules as alerts/ in a PrometheusRule that promtool accepts."""

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
    """The pod template, the app container and the streamtap (init) container."""
    deployment = _load("sidecar.yaml")
    pod = deployment["spec"]["template"]
    containers = {c["name"]: c for c in pod["spec"]["containers"]}
    init = {c["name"]: c for c in pod["spec"].get("initContainers", [])}
    return pod, containers["app"], init["streamtap"]


def _shutdown_grace(sidecar: dict[str, Any]) -> int:
    return int(next(a for a in sidecar["args"] if a.startswith("--shutdown-grace=")).split("=")[1])


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


def test_streamtap_is_a_native_sidecar_that_stops_after_the_app() -> None:
    """An init container with restartPolicy Always starts before the app and gets its SIGTERM only
    once the app has exited: as an ordinary container it stopped accepting while the app, told to
    stop at the same moment, still called it."""
    pod, app, sidecar = _sidecar()
    spec = pod["spec"]
    assert [c["name"] for c in spec["containers"]] == ["app"]
    assert [c["name"] for c in spec["initContainers"]] == ["streamtap"]
    assert sidecar["restartPolicy"] == "Always"
    assert "restartPolicy" not in app
    # The app starts once the proxy serves.
    assert sidecar["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    # One grace for the whole stop, in order: the app's calls (given the time the proxy gives its
    # streams), then the proxy's own grace and its last spans (the OTLP exporter's 10 s timeout).
    grace = _shutdown_grace(sidecar)
    assert spec["terminationGracePeriodSeconds"] >= grace + grace + 10


def _restricted_violations(spec: dict[str, Any]) -> list[str]:
    """What the Pod Security Standard "restricted" (and "baseline", which it includes) forbids in a
    pod spec, but for AppArmor, SELinux, procMount, sysctls and Windows host processes.

    Each container's effective settings are its own securityContext over the pod's.
    """
    out = []
    pod_context = spec.get("securityContext", {})
    out += [f"pod: {key}" for key in ("hostNetwork", "hostPID", "hostIPC") if spec.get(key)]
    allowed_volumes = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim"}
    allowed_volumes |= {"projected", "secret"}
    for volume in spec.get("volumes", []):
        kinds = set(volume) - {"name"}
        out += [f"volume {volume['name']}: {kind}" for kind in sorted(kinds - allowed_volumes)]
    if pod_context.get("runAsUser") == 0:
        out.append("pod: runAsUser 0")
    for container in [*spec.get("initContainers", []), *spec["containers"]]:
        name, own = container["name"], container.get("securityContext", {})
        context = {**pod_context, **own}
        if context.get("runAsNonRoot") is not True:
            out.append(f"{name}: runAsNonRoot is not true")
        if context.get("runAsUser") == 0:
            out.append(f"{name}: runAsUser 0")
        if context.get("seccompProfile", {}).get("type") not in ("RuntimeDefault", "Localhost"):
            out.append(f"{name}: seccompProfile is not RuntimeDefault or Localhost")
        if own.get("allowPrivilegeEscalation") is not False:
            out.append(f"{name}: allowPrivilegeEscalation is not false")
        if own.get("privileged"):
            out.append(f"{name}: privileged")
        capabilities = own.get("capabilities", {})
        if "ALL" not in capabilities.get("drop", []):
            out.append(f"{name}: capabilities do not drop ALL")
        if set(capabilities.get("add", [])) - {"NET_BIND_SERVICE"}:
            out.append(f"{name}: capabilities add more than NET_BIND_SERVICE")
        if any("hostPort" in port for port in container.get("ports", [])):
            out.append(f"{name}: hostPort")
    return out


def test_the_sidecar_pushes_spans_only_and_runs_as_the_images_user() -> None:
    _, _, sidecar = _sidecar()
    # Prometheus scrapes its metrics: pushed too, they would go to a collector that may have
    # no metrics pipeline (a 404 logged every minute).
    assert _env(sidecar)["OTEL_METRICS_EXPORTER"] == "none"
    assert "USER 10001" in (ROOT / "Dockerfile").read_text().splitlines()
    assert sidecar["securityContext"]["runAsUser"] == 10001


def test_the_pod_passes_the_restricted_pod_security_standard() -> None:
    pod, _, _ = _sidecar()
    assert _restricted_violations(pod["spec"]) == []
    assert pod["spec"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    # The checker sees what it must: a bare pod fails on every count, for every container.
    bare = {"containers": [{"name": "app"}], "initContainers": [{"name": "streamtap"}]}
    assert len(_restricted_violations(bare)) == 2 * 4


def test_the_podmonitor_finds_pods_in_every_namespace() -> None:
    """The relabelling names each job <namespace>/<app>; without a namespaceSelector the operator
    looks only in the PodMonitor's own namespace."""
    monitor = _load("podmonitor.yaml")
    assert monitor["spec"]["namespaceSelector"] == {"any": True}


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
