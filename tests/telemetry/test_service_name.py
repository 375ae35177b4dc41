from __future__ import annotations

import pytest

from streamtap._telemetry import build_tracer_provider


def test_service_name_defaults_to_the_argument() -> None:
    provider = build_tracer_provider("streamtap-proxy", environ={"OTEL_TRACES_EXPORTER": "none"})
    assert provider.resource.attributes["service.name"] == "streamtap-proxy"


def test_otel_service_name_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "checkout")  # Resource.create reads the process environment
    env = {"OTEL_TRACES_EXPORTER": "none", "OTEL_SERVICE_NAME": "checkout"}
    provider = build_tracer_provider("streamtap-proxy", environ=env)
    assert provider.resource.attributes["service.name"] == "checkout"
