from __future__ import annotations

import contextlib
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from typing import NoReturn

import click
import pytest
from click.testing import CliRunner

import streamtap._proxy_config
import streamtap._proxy_server
from streamtap import __version__
from streamtap._cli import main
from streamtap._cli_params import EnvOption
from streamtap._proxy_server import listen_url


def test_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"streamtap, version {__version__}"


def test_number_options_refuse_nan() -> None:
    """click's FloatRange lets nan through; every number option of streamtap's refuses it."""
    for argv in (
        ["check", "--timeout", "nan"],
        ["proxy", "--shutdown-grace", "nan"],
        ["proxy", "--pass-through-timeout", "nan"],
    ):
        result = CliRunner().invoke(main, argv)
        assert result.exit_code == 2, argv
        assert "'nan' is not a number" in result.output, argv
    result = CliRunner().invoke(main, ["check", "--timeout", "0"])
    assert result.exit_code == 2
    assert "0<x<=300" in result.output


@pytest.mark.parametrize("where", ["flag", "env"])
def test_proxy_refuses_an_infinite_shutdown_grace(where: str) -> None:
    """It was accepted, then crashed the proxy at start (OverflowError)."""
    if where == "flag":
        result = CliRunner().invoke(main, ["proxy", "--shutdown-grace", "inf"])
        named = "Invalid value for '--shutdown-grace':"
    else:
        result = CliRunner().invoke(main, ["proxy"], env={"STREAMTAP_PROXY_SHUTDOWN_GRACE": "inf"})
        named = "Invalid value for STREAMTAP_PROXY_SHUTDOWN_GRACE (--shutdown-grace):"
    assert result.exit_code == 2
    assert named in result.output
    assert "'inf' is not a finite number" in result.output


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


@pytest.mark.parametrize("flag", ["--listen", "--ops-listen"])
def test_proxy_names_a_listen_host_that_does_not_resolve(monkeypatch: pytest.MonkeyPatch, flag: str) -> None:
    """uvicorn said only `ERROR: [Errno -2] Name or service not known` and exited 3."""
    served: list[object] = []
    monkeypatch.setattr(streamtap._proxy_server, "serve", lambda *a, **k: served.append(a))
    argv = ["proxy", "--listen", "127.0.0.1:0", flag, "nosuch.invalid:8787"]  # .invalid never resolves
    result = CliRunner().invoke(main, argv, env={"OTEL_SDK_DISABLED": "true"})
    assert result.exit_code == 2, result.output
    name = flag.removeprefix("--").replace("-", "_")
    assert f"Error: {name} nosuch.invalid: " in result.output
    assert "pass an address of this machine, e.g. 127.0.0.1" in result.output
    assert served == []


def _proxy_cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from streamtap._cli import main; main()", "proxy", *args]


@pytest.mark.parametrize("flag", ["--listen", "--ops-listen"])
def test_proxy_names_the_setting_whose_port_is_taken(flag: str) -> None:
    """uvicorn logged the address without the setting, and exited 3."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        other = "--ops-listen" if flag == "--listen" else "--listen"
        result = subprocess.run(
            _proxy_cli(other, "127.0.0.1:0", flag, f"127.0.0.1:{port}"),
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "OTEL_SDK_DISABLED": "true"},
        )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    name = flag.removeprefix("--").replace("-", "_")
    assert (
        f"Error: {name} {port} on 127.0.0.1: Address already in use; "
        f"pass another port, or {name} 127.0.0.1:0 for a free one"
    ) in result.stderr
    assert "streamtap proxy on" not in result.stderr  # never announced: it never listened


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize("ops_host", ["127.0.0.1", "localhost"])
def test_proxy_names_both_settings_when_ops_listen_is_listen(
    monkeypatch: pytest.MonkeyPatch, ops_host: str
) -> None:
    """Each address was checked alone and passed; uvicorn then failed the second listener
    ("address already in use", naming neither setting) and the proxy exited 3."""
    served: list[object] = []
    monkeypatch.setattr(streamtap._proxy_server, "serve", lambda *a, **k: served.append(a))
    port = _free_port()
    argv = ["proxy", "--listen", f"127.0.0.1:{port}", "--ops-listen", f"{ops_host}:{port}"]
    result = CliRunner().invoke(main, argv, env={"OTEL_SDK_DISABLED": "true"})
    assert result.exit_code == 2, result.output
    assert (
        f"Error: ops_listen {ops_host}:{port} and listen 127.0.0.1:{port} would listen on the same "
        f"address and port: pass ops_listen a port other than {port}"
    ) in " ".join(result.output.split())
    assert served == []
    other = ["proxy", "--listen", f"127.0.0.1:{port}", "--ops-listen", f"{ops_host}:{_free_port()}"]
    assert CliRunner().invoke(main, other, env={"OTEL_SDK_DISABLED": "true"}).exit_code == 0
    assert len(served) == 1


def test_proxy_reports_a_port_taken_after_its_check_in_one_line() -> None:
    # A port taken between the check and uvicorn's bind: uvicorn's one line and status 3, not
    # a traceback of the other listener's task group.
    code = (
        "import streamtap._cli_proxy as c; c._check_listeners = lambda config: None; "
        "from streamtap._cli import main; main()"
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                code,
                "proxy",
                "--listen",
                "127.0.0.1:0",
                "--ops-listen",
                f"127.0.0.1:{port}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "OTEL_SDK_DISABLED": "true"},
        )
    assert result.returncode == 3
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1, result.stderr
    assert f"('127.0.0.1', {port}): address already in use" in errors[0]
    assert "streamtap proxy on" not in result.stderr  # never announced: it never listened


# Runs a command with SIGINT ignored, as a background job of a non-interactive shell starts.
_SIGINT_IGNORED = "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); os.execv(sys.argv[1], sys.argv[1:])"


@contextlib.contextmanager
def _proxy_process(*, sigint_ignored: bool = False) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`streamtap proxy` on a free loopback port, and the banner it printed once bound."""
    command = _proxy_cli("--listen", "127.0.0.1:0")
    if sigint_ignored:
        command = [sys.executable, "-c", _SIGINT_IGNORED, *command]
    process = subprocess.Popen(
        command,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OTEL_SDK_DISABLED": "true"},
    )
    try:
        assert process.stderr is not None
        yield process, process.stderr.readline()
    finally:
        process.kill()
        process.wait(timeout=30)
        if process.stderr is not None:
            process.stderr.close()


def test_proxy_announces_the_address_it_listens_on() -> None:
    with _proxy_process() as (_, banner):
        url = banner.split()[3]  # printed once bound, so the port is the real one
        assert url.startswith("http://127.0.0.1:") and not url.startswith("http://127.0.0.1:0/"), banner
        with urllib.request.urlopen(url.removesuffix("/v1") + "/healthz", timeout=10) as response:
            assert response.status == 200


@pytest.mark.parametrize("sigint_ignored", [False, True], ids=["terminal", "background-job"])
def test_proxy_stops_on_ctrl_c_with_130_and_no_abort(sigint_ignored: bool) -> None:
    # A background job of a script starts with SIGINT ignored: it stopped on `kill -INT` and
    # exited 0, as if it had ended by itself.
    with _proxy_process(sigint_ignored=sigint_ignored) as (process, banner):
        assert "streamtap proxy on" in banner
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 130
        assert process.stderr is not None
        assert "Aborted" not in process.stderr.read()


def test_listen_url_brackets_ipv6_hosts() -> None:
    assert listen_url(("127.0.0.1", 8787)) == "http://127.0.0.1:8787/v1"
    assert listen_url(("::1", 8787, 0, 0)) == "http://[::1]:8787/v1"


def test_fake_upstream_on_a_taken_port_fails_in_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(main, ["fake-upstream", "--port", str(port)])
    assert result.exit_code == 2
    assert f"--port {port} on 127.0.0.1:" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://x/v1", "its scheme is not http or https"),
        ("http://127.0.0.1:99999/v1", "Port out of range 0-65535"),
        ("http://user:hunter2pw@127.0.0.1:99999/v1", "got 'http://127.0.0.1:99999/v1': Port out of range"),
    ],
)
def test_demo_urls_must_be_base_urls(url: str, reason: str) -> None:
    for flag in ("--base-url", "--proxy-url"):
        result = CliRunner().invoke(main, ["demo", flag, url])
        assert result.exit_code == 2, flag
        expected = f"Invalid value for '{flag}': must be an http:// or https:// base URL with a host"
        assert expected in result.output
        assert reason in result.output
        assert "hunter2pw" not in result.output  # a refused URL is shown without its password


def test_rules_refuse_an_empty_runbook_base() -> None:
    # Every alert's runbook link would be its #anchor alone.
    result = CliRunner().invoke(main, ["rules", "--runbook-base", " "])
    assert result.exit_code == 2
    assert "Invalid value for --runbook-base" in result.output
    assert (
        CliRunner().invoke(main, ["rules", "--runbook-base", "https://example.com/runbooks"]).exit_code == 0
    )


def test_proxy_reads_every_flag_from_a_streamtap_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    config = tmp_path / "proxy.toml"
    config.write_text("")
    seen: dict[str, object] = {}

    def load_config(path: str | None, **overrides: object) -> NoReturn:
        seen.update(overrides, path=path)
        raise ValueError("stop before serving")

    monkeypatch.setattr(streamtap._proxy_config, "load_config", load_config)
    env = {
        "STREAMTAP_PROXY_UPSTREAM": "http://up.example/v1",
        "STREAMTAP_PROXY_LISTEN": "127.0.0.1:0",
        "STREAMTAP_PROXY_OPS_LISTEN": "127.0.0.1:0",
        "STREAMTAP_PROXY_CONFIG": str(config),
        "STREAMTAP_PROXY_UPSTREAM_API_KEY_ENV": "UP_KEY",
        "STREAMTAP_PROXY_CLIENT_TOKEN_ENV": "CLIENT_TOKEN",
        "STREAMTAP_PROXY_MAX_BODY": "1000",
        "STREAMTAP_PROXY_MAX_UPLOAD": "2000",
        "STREAMTAP_PROXY_PASS_THROUGH_TIMEOUT": "7.5",
        "STREAMTAP_PROXY_SHUTDOWN_GRACE": "3",
        "UP_KEY": "sk-up",
        "CLIENT_TOKEN": "proxy-token",
    }
    result = CliRunner().invoke(main, ["proxy"], env=env)
    assert result.exit_code == 2
    assert "stop before serving" in result.output
    assert seen == {
        "path": str(config),
        "upstream": "http://up.example/v1",
        "listen": "127.0.0.1:0",
        "ops_listen": "127.0.0.1:0",
        "upstream_api_key": "sk-up",
        "client_token": "proxy-token",
        "max_body": 1000,
        "max_upload": 2000,
        "pass_through_timeout": 7.5,
        "shutdown_grace": 3.0,
    }


def test_demo_reads_every_flag_from_a_streamtap_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    import streamtap.demo

    ran: list[streamtap.demo.DemoOptions] = []

    def run(options: streamtap.demo.DemoOptions) -> int:
        ran.append(options)
        return 5

    monkeypatch.setattr(streamtap.demo, "run", run)
    env = {
        "STREAMTAP_DEMO_DURATION": "30",
        "STREAMTAP_DEMO_SEED": "7",
        "STREAMTAP_DEMO_UI": "false",
        "STREAMTAP_DEMO_REAL": "true",
        "STREAMTAP_DEMO_BASE_URL": "http://up.example/v1",
        "STREAMTAP_DEMO_PROXY_URL": "http://proxy.example/v1",
        "STREAMTAP_DEMO_METRICS_ADDR": "0.0.0.0",
        "STREAMTAP_DEMO_METRICS_PORT": "0",
        "STREAMTAP_DEMO_STACK": "false",
        "STREAMTAP_DEMO_MODEL": "gpt-x",
    }
    result = CliRunner().invoke(main, ["demo"], env=env)
    assert result.exit_code == 5  # run's exit code is the command's
    assert ran == [
        streamtap.demo.DemoOptions(
            duration=30.0,
            seed=7,
            ui=False,
            real=True,
            base_url="http://up.example/v1",
            proxy_url="http://proxy.example/v1",
            metrics_addr="0.0.0.0",
            metrics_port=0,
            stack=False,
            model="gpt-x",
        )
    ]
    refused = CliRunner().invoke(main, ["demo"], env={"STREAMTAP_DEMO_BASE_URL": "ftp://x/v1"})
    assert refused.exit_code == 2
    assert "Invalid value for STREAMTAP_DEMO_BASE_URL (--base-url)" in refused.output


def _options() -> list[tuple[str, click.Option]]:
    return [
        (name, param)
        for name, command in main.commands.items()
        for param in command.params
        if isinstance(param, click.Option) and param.name != "help"
    ]


def _prefix(command: str) -> str:
    return f"STREAMTAP_{command.upper().replace('-', '_')}"


def test_every_option_is_an_env_option() -> None:
    """The empty-variable check and the errors naming the variable apply to every option."""
    assert [f"{name} {p.opts[0]}" for name, p in _options() if not isinstance(p, EnvOption)] == []


@pytest.mark.parametrize(
    ("command", "option"),
    [(name, p) for name, p in _options() if isinstance(p, EnvOption) and not p.empty_ok],
    ids=lambda value: value if isinstance(value, str) else value.opts[0],
)
def test_an_empty_variable_is_a_usage_error_naming_it(command: str, option: EnvOption) -> None:
    """click takes a variable set but empty for unset: STREAMTAP_PROXY_UPSTREAM= forwarded to
    the default upstream, STREAMTAP_PROXY_CONFIG= skipped the file."""
    variable = option.envvar_name(click.Context(main.commands[command], auto_envvar_prefix=_prefix(command)))
    assert variable is not None
    result = CliRunner().invoke(main, [command], env={variable: ""})
    assert result.exit_code == 2, result.output
    error = result.output.splitlines()[-1]
    assert (
        error
        == f"Error: {variable} ({option.opts[0]}) is set but empty; unset it or give it {option.accepted()}"
    )
    assert "a value for" not in error  # every option says what it takes


def test_an_empty_variable_says_what_the_option_takes() -> None:
    def error(command: str, variable: str) -> str:
        result = CliRunner().invoke(main, [command], env={variable: ""})
        assert result.exit_code == 2
        return result.output.splitlines()[-1]

    assert error("proxy", "STREAMTAP_PROXY_UPSTREAM") == (
        "Error: STREAMTAP_PROXY_UPSTREAM (--upstream) is set but empty; unset it or give it an http:// or "
        "https:// base URL"
    )
    assert error("proxy", "STREAMTAP_PROXY_MAX_BODY").endswith("give it an integer >= 1")
    assert error("check", "STREAMTAP_CHECK_TIMEOUT").endswith("give it a number > 0 and <= 300")
    assert error("proxy", "STREAMTAP_PROXY_CONFIG").endswith("give it the path of a TOML file")


def test_an_empty_incident_variable_means_no_incidents(monkeypatch: pytest.MonkeyPatch) -> None:
    import streamtap.fake._upstream

    configs: list[object] = []
    monkeypatch.setattr(
        streamtap.fake._upstream, "run_until_signal", lambda config, _: configs.append(config)
    )
    result = CliRunner().invoke(
        main, ["fake-upstream", "--port", "0"], env={"STREAMTAP_FAKE_UPSTREAM_INCIDENT": ""}
    )
    assert result.exit_code == 0, result.output
    assert [getattr(config, "incidents", None) for config in configs] == [()]


def test_a_flags_empty_variable_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    # How compose and Helm files write a flag left off; click took it for unset, as here.
    import streamtap.fake._upstream

    configs: list[object] = []
    monkeypatch.setattr(
        streamtap.fake._upstream, "run_until_signal", lambda config, _: configs.append(config)
    )
    env = {"STREAMTAP_FAKE_UPSTREAM_REPLAY_ON_RESUME": ""}
    result = CliRunner().invoke(main, ["fake-upstream", "--port", "0"], env=env)
    assert result.exit_code == 0, result.output
    assert [getattr(config, "replay_on_resume", None) for config in configs] == [False]


def test_shell_completion_works_beside_an_empty_variable() -> None:
    env = {
        "STREAMTAP_PROXY_UPSTREAM": "",
        "_STREAMTAP_COMPLETE": "bash_complete",
        "COMP_WORDS": "streamtap proxy --li",
        "COMP_CWORD": "2",
    }
    result = CliRunner().invoke(main, [], env=env, prog_name="streamtap")
    assert result.exit_code == 0, result.output
    assert "--listen" in result.output


def test_a_bad_value_is_named_as_the_user_gave_it(tmp_path: pathlib.Path) -> None:
    """A variable's value was reported under its flag's name, and an option with an explicit
    envvar named its variable for a value given as a flag."""
    result = CliRunner().invoke(main, ["proxy"], env={"STREAMTAP_PROXY_MAX_BODY": "10MiB"})
    assert result.exit_code == 2
    assert "Error: Invalid value for STREAMTAP_PROXY_MAX_BODY (--max-body): '10MiB'" in result.output
    result = CliRunner().invoke(main, ["proxy", "--max-body", "10MiB"])
    assert "Error: Invalid value for '--max-body': '10MiB'" in result.output
    missing = str(tmp_path / "missing.toml")
    result = CliRunner().invoke(main, ["proxy", "--config", missing])
    assert result.exit_code == 2
    assert f"Error: Invalid value for '--config': File '{missing}' does not exist." in result.output
    assert "STREAMTAP_PROXY_CONFIG" not in result.output
    result = CliRunner().invoke(main, ["proxy"], env={"STREAMTAP_PROXY_CONFIG": missing})
    assert f"Error: Invalid value for STREAMTAP_PROXY_CONFIG (--config): File '{missing}'" in result.output
    result = CliRunner().invoke(main, ["check"], env={"STREAMTAP_CHECK_API_KEY_ENV": "A=B"})
    assert (
        "Error: Invalid value for STREAMTAP_CHECK_API_KEY_ENV (--api-key-env): must be the name of an environment"
        in result.output
    )
    result = CliRunner().invoke(main, ["rules"], env={"STREAMTAP_RULES_RUNBOOK_BASE": " "})
    assert "Error: Invalid value for STREAMTAP_RULES_RUNBOOK_BASE:" in result.output


@pytest.mark.parametrize("where", ["flag", "env", "file"])
def test_a_refused_setting_names_what_gave_it(where: str, tmp_path: pathlib.Path) -> None:
    """ProxyConfig's errors come after parsing; they say which flag, variable or file key it was."""
    config = tmp_path / "proxy.toml"
    config.write_text('listen = "127.0.0.1:x"\n')
    argv, env, named = {
        "flag": (["--listen", "127.0.0.1:x"], {}, "--listen: "),
        "env": ([], {"STREAMTAP_PROXY_LISTEN": "127.0.0.1:x"}, "STREAMTAP_PROXY_LISTEN: "),
        "file": (["--config", str(config)], {}, f"{config}: "),
    }[where]
    result = CliRunner().invoke(main, ["proxy", *argv], env=env)
    assert result.exit_code == 2
    assert result.output.splitlines()[-1].startswith(f"Error: {named}listen must be host:port")


def test_a_token_given_where_its_variables_name_belongs_is_not_echoed() -> None:
    """A token of letters and digits is an identifier too: refused as unset, without it."""
    token = "c0ffee5e3d9a4b7f8e21d6a0b3c4d5e6"
    result = CliRunner().invoke(main, ["proxy", "--client-token-env", token])
    assert result.exit_code == 2 and token not in result.output
    assert "environment variable the variable --client-token-env names is empty or unset" in result.output
    result = CliRunner().invoke(
        main,
        ["check", "--api-key-env", token, "--timeout", "0.5"],
        env={"OPENAI_BASE_URL": "http://127.0.0.1:9/v1"},
    )
    assert result.exit_code == 1 and token not in result.output
    assert "no API key (the variable api_key_env names is not set)" in result.output


def test_a_secret_variable_is_named_as_the_user_gave_it() -> None:
    result = CliRunner().invoke(
        main, ["proxy"], env={"STREAMTAP_PROXY_UPSTREAM_API_KEY_ENV": "NO_SUCH_VARIABLE_HERE"}
    )
    assert result.exit_code == 2
    assert (
        "Error: Invalid value for STREAMTAP_PROXY_UPSTREAM_API_KEY_ENV: environment variable "
        "NO_SUCH_VARIABLE_HERE is empty or unset" in result.output
    )


@pytest.mark.parametrize(
    ("argv", "env"),
    [
        (["--upstream-api-key-env", "sk-LEAKCANARY-1234"], {}),
        ([], {"STREAMTAP_PROXY_UPSTREAM_API_KEY_ENV": "sk-LEAKCANARY-1234"}),
        ([], {"STREAMTAP_PROXY_CLIENT_TOKEN_ENV": "tok LEAKCANARY"}),
        ([], {"STREAMTAP_PROXY_CLIENT_TOKEN_ENV": " "}),
    ],
)
def test_a_secret_given_where_its_variable_belongs_is_refused_unseen(
    argv: list[str], env: dict[str, str]
) -> None:
    """A manifest that wires the secret into the variable meant for its name: refused without
    printing it, which pod logs would keep."""
    result = CliRunner().invoke(main, ["proxy", *argv], env=env)
    assert result.exit_code == 2
    assert "must be the name of an environment variable" in result.output
    assert "LEAKCANARY" not in result.output


@pytest.mark.parametrize(
    ("argv", "env", "named"),
    [
        (["--metrics-addr", ""], {}, "'--metrics-addr'"),
        ([], {"STREAMTAP_DEMO_METRICS_ADDR": " "}, "STREAMTAP_DEMO_METRICS_ADDR (--metrics-addr)"),
        (["--model", ""], {}, "'--model'"),
    ],
)
def test_demo_refuses_an_empty_metrics_addr_or_model(
    argv: list[str], env: dict[str, str], named: str
) -> None:
    """An empty --metrics-addr was a traceback (serve_metrics' ValueError), exit 1; an empty
    --model was the default model."""
    result = CliRunner().invoke(main, ["demo", "--no-stack", "--no-ui", *argv], env=env)
    assert result.exit_code == 2
    assert f"Error: Invalid value for {named}: must be " in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize("flag", ["--upstream-api-key-env", "--client-token-env"])
def test_proxy_refuses_an_empty_variable_name(flag: str) -> None:
    result = CliRunner().invoke(main, ["proxy", flag, ""])
    assert result.exit_code == 2
    assert f"Error: Invalid value for '{flag}': must be the name of an environment variable" in result.output


@pytest.mark.parametrize("port", ["²", "١٢", "８７８７"])
@pytest.mark.parametrize("name", ["listen", "ops_listen"])
def test_a_port_of_other_digits_is_refused_naming_the_setting(name: str, port: str) -> None:
    """str.isdigit() takes them and int() did not: "invalid literal for int() with base 10"."""
    from streamtap._proxy_config import ProxyConfig

    message = f"{name} must be host:port with a port in 0..65535, got '127.0.0.1:{port}'"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        ProxyConfig(**{name: f"127.0.0.1:{port}"})
    result = CliRunner().invoke(main, ["proxy", "--listen", f"127.0.0.1:{port}"])
    assert result.exit_code == 2
    assert result.output.splitlines()[-1] == (
        f"Error: --listen: listen must be host:port with a port in 0..65535, got '127.0.0.1:{port}'"
    )


@pytest.mark.parametrize("value", ["::1", "::1:8787", "fe80::1:8788"])
def test_an_ipv6_listen_address_without_brackets_is_refused_with_the_form(value: str) -> None:
    # "::1" was read as host "::" port 1, and failed later as "Name or service not known".
    result = CliRunner().invoke(main, ["proxy", "--listen", value])
    assert result.exit_code == 2
    assert "an IPv6 address goes in brackets, as [::1]:8787" in result.output.splitlines()[-1]


def _check_cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from streamtap._cli import main; main()", "check", *args]


def test_ctrl_c_during_check_exits_130_not_as_a_failed_check() -> None:
    """click turned the interrupt into "Aborted!" and status 1, the status of a failed check."""
    with socket.socket() as silent:  # accepts, never answers: the check waits on GET /models
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        process = subprocess.Popen(
            _check_cli("--base-url", f"http://127.0.0.1:{port}/v1", "--timeout", "30"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "OPENAI_API_KEY": "sk-" + "x" * 40},
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        try:
            silent.settimeout(30)
            connection, _ = silent.accept()  # the check is under way
            with connection:
                process.send_signal(signal.SIGINT)
                _, errors = process.communicate(timeout=30)
        finally:
            process.kill()
            process.wait(timeout=30)
    assert process.returncode == 130, errors
    assert "Aborted!" not in errors and "Traceback" not in errors
