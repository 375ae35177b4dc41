"""The compose stack, validated statically: compose config, Prometheus config with its mounted
rules, Alertmanager config, every mounted file present, images pinned, Grafana wired to Tempo."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import _repo  # noqa: F401
import pytest
import yaml
from _repo import ROOT

from conftest import require_binary
from streamtap.monitoring.rules import render


def _compose() -> dict[str, Any]:
    compose: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return compose


def _bind_mounts(service: str) -> list[tuple[Path, str]]:
    """(host path in the repo, container path) of a service's bind mounts."""
    mounts = []
    for volume in _compose()["services"][service].get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            mounts.append((ROOT / source, target))
    return mounts


def test_services() -> None:
    services = _compose()["services"]
    assert sorted(services) == [
        "alert-webhook",
        "alertmanager",
        "demo",
        "fake-upstream",
        "grafana",
        "otel-collector",
        "prometheus",
        "proxy",
        "tempo",
    ]
    assert services["fake-upstream"]["command"][:4] == [
        "streamtap",
        "fake-upstream",
        "--host=0.0.0.0",
        "--port=8600",
    ]
    # Every incident of the story reaches the fake, the ones after a `;` too.
    assert [a for a in services["fake-upstream"]["command"] if a.startswith("--incident=")] == [
        "--incident=*:2%:status=503",
        "--incident=300-480:40%:status=503;should_retry=false",
        "--incident=660-780:50%:status=429;retry_after=1",
        "--incident=960-1080:20%:drop_after=3",
        "--incident=960-1080:10%:truncate_after=5",
    ]
    assert services["demo"]["command"] == [
        "streamtap",
        "demo",
        "--no-ui",
        "--no-stack",
        "--duration=86400",
        "--base-url=${STREAMTAP_DEMO_BASE_URL:-http://fake-upstream:8600/v1}",
        "--proxy-url=http://proxy:8787/v1",
        "--metrics-addr=0.0.0.0",
        "--metrics-port=9464",
    ]
    assert services["proxy"]["command"] == [
        "streamtap",
        "proxy",
        "--upstream=${STREAMTAP_DEMO_BASE_URL:-http://fake-upstream:8600/v1}",
        "--listen=0.0.0.0:8787",
    ]
    assert services["demo"]["environment"]["OPENAI_API_KEY"] == "${OPENAI_API_KEY:-}"
    assert "--enable-feature=exemplar-storage" in services["prometheus"]["command"]


def test_the_proxy_is_given_its_shutdown_grace_and_a_flush_before_it_is_killed() -> None:
    from streamtap._proxy_config import ProxyConfig

    proxy = _compose()["services"]["proxy"]
    flags = [a.split("=", 1)[1] for a in proxy["command"] if a.startswith("--shutdown-grace=")]
    grace = float(flags[0]) if flags else ProxyConfig(upstream="http://x/v1").shutdown_grace
    stop = proxy.get("stop_grace_period", "10s")  # compose's default
    assert stop.endswith("s") and float(stop[:-1]) >= grace + 10  # + the OTLP exporter's timeout


def _published(service: dict[str, Any]) -> list[tuple[str, int]]:
    """(host address, host port) of each port a service publishes, short or long syntax; an
    address left out is every interface ("0.0.0.0")."""
    out = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            out.append((str(port.get("host_ip", "0.0.0.0")), int(port["published"])))
            continue
        parts = str(port).split("/")[0].rsplit(":", 2)
        if len(parts) == 1:  # a container port alone: a random host port, on every interface
            out.append(("0.0.0.0", 0))
        else:
            out.append((parts[0] if len(parts) == 3 else "0.0.0.0", int(parts[-2])))
    return out


def test_only_what_users_open_is_published_and_on_loopback_only() -> None:
    """Prometheus runs with --web.enable-lifecycle (an unauthenticated /-/quit) and Grafana admits
    anonymous viewers: nothing is published beyond this machine, and nothing nobody opens."""
    published = {name: _published(s) for name, s in _compose()["services"].items() if s.get("ports")}
    assert {name: [address for address, _ in ports] for name, ports in published.items()} == {
        name: ["127.0.0.1"] for name in ("prometheus", "alertmanager", "grafana")
    }
    # What the compose header and the README's section on the stack tell users to open, and
    # nothing else.
    header = (ROOT / "docker-compose.yml").read_text().split("\nservices:")[0]
    readme = (
        (ROOT / "README.md").read_text().split("## Dashboards and alerts on a laptop")[1].split("\n## ")[0]
    )
    opened = {int(port) for text in (header, readme) for port in re.findall(r"http://localhost:(\d+)", text)}
    assert {port for ports in published.values() for _, port in ports} == opened == {3000, 9090, 9093}
    assert _published({"ports": ["9090:9090", "127.0.0.1:1:2/udp", "80", {"published": 5, "target": 5}]}) == [
        ("0.0.0.0", 9090),
        ("127.0.0.1", 1),
        ("0.0.0.0", 0),
        ("0.0.0.0", 5),
    ]


def test_images_are_pinned() -> None:
    images = {name: s["image"] for name, s in _compose()["services"].items()}
    assert images == {
        "fake-upstream": "streamtap:dev",
        "demo": "streamtap:dev",
        "proxy": "streamtap:dev",
        "prometheus": "prom/prometheus:v2.53.2",
        "alertmanager": "prom/alertmanager:v0.27.0",
        "alert-webhook": "python:3.11-slim",
        # The dashboards are generated by grafana-foundation-sdk 11.6, for Grafana 11.6.
        "grafana": "grafana/grafana:11.6.0",
        "otel-collector": "otel/opentelemetry-collector:0.120.0",
        "tempo": "grafana/tempo:2.7.1",
    }


def test_every_mounted_path_exists() -> None:
    mounts = [m for service in _compose()["services"] for m in _bind_mounts(service)]
    assert len(mounts) == 8
    missing = [str(host.relative_to(ROOT)) for host, _ in mounts if not host.exists()]
    assert missing == []


def test_grafana_home_dashboard_is_mounted() -> None:
    grafana = _compose()["services"]["grafana"]
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    for host, target in _bind_mounts("grafana"):
        if home.startswith(target + "/"):
            assert (host / home[len(target) + 1 :]).is_file()
            break
    else:
        pytest.fail(f"{home} is not inside any Grafana mount")
    assert grafana["environment"]["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"


def test_exemplars_link_to_the_trace_datasource() -> None:
    provisioning = ROOT / "deploy" / "grafana" / "provisioning"
    sources = yaml.safe_load((provisioning / "datasources" / "datasources.yml").read_text())["datasources"]
    by_type = {s["type"]: s for s in sources}
    destinations = by_type["prometheus"]["jsonData"]["exemplarTraceIdDestinations"]
    assert destinations == [
        {"name": "trace_id", "datasourceUid": "tempo", "urlDisplayLabel": "View trace in Tempo"}
    ]
    assert by_type["tempo"]["uid"] == "tempo"
    assert by_type["tempo"]["url"] == "http://tempo:3200"
    providers = yaml.safe_load((provisioning / "dashboards" / "streamtap.yml").read_text())["providers"]
    assert providers[0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_collector_sends_traces_to_tempo() -> None:
    config = yaml.safe_load((ROOT / "deploy" / "otel-collector" / "config.yml").read_text())
    assert config["service"]["pipelines"]["traces"] == {
        "receivers": ["otlp"],
        "processors": ["batch"],
        "exporters": ["otlp/tempo"],
    }
    assert config["exporters"]["otlp/tempo"]["endpoint"] == "tempo:4317"


def test_alertmanager_webhook_is_a_compose_service() -> None:
    config = yaml.safe_load((ROOT / "alerts" / "alertmanager.yml").read_text())
    urls = {c["url"] for r in config["receivers"] for c in r.get("webhook_configs", [])}
    assert urls == {f"http://alert-webhook:5001/{name}" for name in ("page", "notify", "ticket")}


def test_dockerfile() -> None:
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    assert "FROM python:3.11-slim" in lines
    assert "RUN pip install . \\" in lines
    # A numeric user (runAsNonRoot can verify only a number), the one useradd creates.
    assert "USER 10001" in lines and any("--uid 10001" in line for line in lines)
    exposed = next(line for line in lines if line.startswith("EXPOSE ")).split()[1:]
    assert exposed == ["8600", "8787", "9464"]  # the fake, the proxy, the demo's /metrics


@pytest.mark.integration
def test_docker_compose_config_is_valid() -> None:
    compose = require_binary("docker-compose")
    result = subprocess.run(
        [compose, "-f", "docker-compose.yml", "config", "--quiet"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.integration
def test_prometheus_config_with_its_mounted_rules(tmp_path: Path) -> None:
    """Lay the mounted files out as the container sees them (under tmp_path), then promtool it."""
    promtool = require_binary("promtool")
    for host, target in _bind_mounts("prometheus"):
        copy = tmp_path / target.lstrip("/")
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(host, copy)
    config = tmp_path / "etc" / "prometheus" / "prometheus.yml"
    result = subprocess.run([promtool, "check", "config", str(config)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout
    rules = sum(len(group["rules"]) for group in render()["groups"])
    assert f"SUCCESS: {rules} rules found" in result.stdout


def test_streamtap_commands_are_lists_the_real_cli_parses() -> None:
    """Exec-form lists only: Compose v2 splits a command string with go-shellwords, which stops
    at the first unquoted `;`, `&`, `|`, `<` or `>` and silently drops the rest."""
    import re

    from streamtap._cli import main

    streamtap_services = [n for n, s in _compose()["services"].items() if s.get("image") == "streamtap:dev"]
    assert sorted(streamtap_services) == ["demo", "fake-upstream", "proxy"]
    for name in streamtap_services:
        command = _compose()["services"][name]["command"]
        assert isinstance(command, list), f"{name}: command must be a list, not a string"
        assert command[0] == "streamtap", name
        args = [re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", a) for a in command[1:]]  # ${VAR:-default}
        context = main.make_context("streamtap", args[:1])
        command_object = main.get_command(context, args[0])
        assert command_object is not None, f"{name}: unknown command {args[0]}"
        command_object.make_context(args[0], args[1:])  # raises on an unknown flag or a bad value


def test_every_signal_sent_to_the_collector_has_a_pipeline() -> None:
    """What setup_telemetry exports (OTEL_<SIGNAL>_EXPORTER, default otlp) the collector must take:
    its OTLP receiver answers 404 for a signal without a pipeline."""
    from streamtap._otel_env import exporter_names

    config = yaml.safe_load((ROOT / "deploy" / "otel-collector" / "config.yml").read_text())
    pipelines = {name.split("/")[0] for name in config["service"]["pipelines"]}
    senders = {
        name: service["environment"]
        for name, service in _compose()["services"].items()
        if "otel-collector" in service.get("environment", {}).get("OTEL_EXPORTER_OTLP_ENDPOINT", "")
    }
    assert sorted(senders) == ["demo", "proxy"]
    for name, environ in senders.items():
        sent = {signal for signal in ("traces", "metrics") if "otlp" in exporter_names(environ, signal)}
        assert "traces" in sent, f"{name}: the stack's spans go to Tempo through the collector"
        assert sent <= pipelines, (
            f"{name} exports {sorted(sent - pipelines)} the collector has no pipeline for"
        )


def _healthcheck_code(service: str, port: int) -> str:
    """The Python a service's healthcheck runs, aimed at `port` instead of the container's."""
    test = _compose()["services"][service]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"], test  # the image has python, not curl
    listened = {"fake-upstream": "8600", "proxy": "8787"}[service]
    assert f"--port={listened}" in _compose()["services"][service]["command"] or any(
        a.endswith(f":{listened}") for a in _compose()["services"][service]["command"]
    )
    code: str = test[3].replace(listened, str(port))
    return code


def test_waited_for_services_have_a_healthcheck() -> None:
    services = _compose()["services"]
    for name, service in services.items():
        depends = service.get("depends_on", {})
        for needed, how in depends.items() if isinstance(depends, dict) else ():
            if how.get("condition") == "service_healthy":
                assert "healthcheck" in services[needed], f"{name} waits for {needed}, which has none"
    assert services["demo"]["depends_on"]["proxy"] == {"condition": "service_healthy"}


@pytest.mark.integration
def test_healthchecks_pass_against_the_real_servers_and_fail_without_them() -> None:
    import os
    import socket
    import sys

    from streamtap.fake import FakeConfig, FakeUpstream

    def check(code: str) -> int:
        return subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30).returncode

    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        closed = unused.getsockname()[1]  # bound, not listening: connections are refused
        assert check(_healthcheck_code("fake-upstream", closed)) != 0
        assert check(_healthcheck_code("proxy", closed)) != 0
    with FakeUpstream(FakeConfig()) as fake:
        fake_port = int(fake.base_url.rsplit(":", 1)[1].split("/")[0])
        assert check(_healthcheck_code("fake-upstream", fake_port)) == 0
        proxy_args = ["--upstream", fake.base_url, "--listen", "127.0.0.1:0"]
        proxy = subprocess.Popen(
            [sys.executable, "-c", "from streamtap._cli import main; main()", "proxy", *proxy_args],
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "OTEL_SDK_DISABLED": "true"},
        )
        try:
            assert proxy.stderr is not None
            banner = proxy.stderr.readline()  # printed once bound
            port = int(re.search(r"127\.0\.0\.1:(\d+)", banner).group(1))  # type: ignore[union-attr]
            assert check(_healthcheck_code("proxy", port)) == 0
        finally:
            proxy.kill()
            proxy.wait(timeout=30)
            if proxy.stderr is not None:
                proxy.stderr.close()
