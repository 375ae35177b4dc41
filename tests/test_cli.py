from __future__ import annotations

import pytest
from click.testing import CliRunner

import streamtap._proxy_server
from streamtap import __version__
from streamtap._cli import main


def test_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"streamtap, version {__version__}"


def test_number_options_refuse_nan() -> None:
    """click's FloatRange lets nan through; every number option of streamtap's refuses it."""
    for argv in (["check", "--timeout", "nan"], ["proxy", "--shutdown-grace", "nan"]):
        result = CliRunner().invoke(main, argv)
        assert result.exit_code == 2, argv
        assert "'nan' is not a number" in result.output, argv
    result = CliRunner().invoke(main, ["check", "--timeout", "0"])
    assert result.exit_code == 2
    assert "0<x<=300" in result.output


def test_proxy_refuses_a_client_token_without_an_upstream_key(monkeypatch: pytest.MonkeyPatch) -> None:
    served: list[object] = []
    monkeypatch.setattr(streamtap._proxy_server, "serve", lambda *a, **k: served.append(a))
    result = CliRunner().invoke(
        main,
        ["proxy", "--listen", "127.0.0.1:0", "--client-token-env", "TOKEN"],
        env={"TOKEN": "proxy-token"},
    )
    assert result.exit_code == 2
    assert "--client-token-env" in result.output
    assert "--upstream-api-key-env" in result.output
    assert served == []
