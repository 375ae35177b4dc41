"""`streamtap proxy`: the sidecar proxy's flags, and how it starts and stops."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import click
from click.core import ParameterSource

from ._cli_params import Number, env_name, option, origin

if TYPE_CHECKING:
    from ._proxy_config import ProxyConfig

# The parameter that gives each setting of ProxyConfig, where the names differ.
_SETTING_PARAMS = {"upstream_api_key": "upstream_api_key_env", "client_token": "client_token_env"}


@click.command()
@option(
    "--upstream",
    default=None,
    show_envvar=True,
    accepts="an http:// or https:// base URL",
    help="The OpenAI-compatible base URL to forward to.  [default: https://api.openai.com/v1]",
)
@option(
    "--listen",
    default=None,
    show_envvar=True,
    accepts="a host:port",
    help="host:port to listen on.  [default: 127.0.0.1:8787]",
)
@option(
    "--ops-listen",
    default=None,
    show_envvar=True,
    accepts="a host:port",
    help="A second host:port serving only /metrics, /healthz and /readyz (e.g. 0.0.0.0:9464 in a pod).",
)
@option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    envvar="STREAMTAP_PROXY_CONFIG",
    show_envvar=True,
    accepts="the path of a TOML file",
    help="A TOML file with upstream, listen, [policy] and [[fallbacks]].",
)
@option(
    "--upstream-api-key-env",
    default=None,
    show_envvar=True,
    accepts="the name of the variable that holds the key",
    callback=env_name,
    help="Name of an environment variable holding a key the proxy sends upstream (then clients must "
    "present the token from --client-token-env).",
)
@option(
    "--client-token-env",
    default=None,
    show_envvar=True,
    accepts="the name of the variable that holds the token",
    callback=env_name,
    help="Name of an environment variable holding the bearer token clients must present.",
)
@option(
    "--max-body",
    type=click.IntRange(min=1),
    default=None,
    show_envvar=True,
    help="Largest request body of a chat completions or responses call, bytes (held whole).  [default: 10 MiB]",
)
@option(
    "--max-upload",
    type=click.IntRange(min=1),
    default=None,
    show_envvar=True,
    help="Largest request body of any other /v1 request, bytes (streamed through).  [default: 512 MiB]",
)
@option(
    "--pass-through-timeout",
    type=Number(min=0, min_open=True),
    default=None,
    show_envvar=True,
    help="Seconds a request to any other /v1 path waits for the upstream to take its body, to "
    "begin its answer, and for each next piece of it.  [default: 600]",
)
@option(
    "--shutdown-grace",
    type=Number(min=0),
    default=None,
    show_envvar=True,
    help="Seconds streams in flight may take to finish on shutdown.  [default: 30]",
)
def proxy(
    upstream: str | None,
    listen: str | None,
    ops_listen: str | None,
    config_path: str | None,
    upstream_api_key_env: str | None,
    client_token_env: str | None,
    max_body: int | None,
    max_upload: int | None,
    pass_through_timeout: float | None,
    shutdown_grace: float | None,
) -> None:
    """Run the OpenAI-compatible sidecar proxy: point OPENAI_BASE_URL at it.

    Chat completions and responses get streamtap's retries, timeouts, fallbacks and telemetry;
    every other /v1 path passes through. /metrics, /healthz and /readyz are served too.
    """
    import os

    from ._proxy_config import SettingError, load_config
    from ._proxy_server import serve
    from ._secrets import shown_variable

    ctx = click.get_current_context()

    def secret(name: str | None, param: str) -> str | None:
        if name is None:
            return None
        value = os.environ.get(name)
        if not value:
            shown = shown_variable(name, "--" + param.replace("_", "-"))
            raise click.BadParameter(
                f"environment variable {shown} is empty or unset", param_hint=origin(ctx, param)
            )
        return value

    try:
        config = load_config(
            config_path,
            upstream=upstream,
            listen=listen,
            ops_listen=ops_listen,
            upstream_api_key=secret(upstream_api_key_env, "upstream_api_key_env"),
            client_token=secret(client_token_env, "client_token_env"),
            max_body=max_body,
            max_upload=max_upload,
            pass_through_timeout=pass_through_timeout,
            shutdown_grace=shutdown_grace,
        )
    except SettingError as error:
        # load_config names the file for a setting of the file's; one from a flag or a
        # variable is named here, as the user wrote it.
        param = _SETTING_PARAMS.get(error.setting, error.setting)
        given = ctx.get_parameter_source(param) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
        raise click.UsageError(f"{origin(ctx, param)}: {error}" if given else str(error)) from None
    except (ValueError, OSError) as error:
        raise click.UsageError(str(error)) from None
    _check_listeners(config)
    from ._telemetry import setup_telemetry

    # OTLP export from the standard OTEL_* variables, Prometheus on /metrics.
    _exit_on_signals()
    try:
        serve(
            config,
            recorders=setup_telemetry(service_name="streamtap-proxy"),
            announce=lambda url: click.echo(f"streamtap proxy on {url} -> {config.upstream}", err=True),
        )
    except KeyboardInterrupt:
        # uvicorn re-raises the SIGINT it handled once the graceful shutdown is over: that is
        # a stop asked for (130, as `demo`), not click's "Aborted!".
        raise SystemExit(130) from None


def _check_listeners(config: ProxyConfig) -> None:
    """A usage error naming the setting whose address cannot be listened on.

    uvicorn would log only `[Errno -2] Name or service not known` for a host that does not
    resolve, and an address without the setting for a taken port, then exit 3. Each address
    is bound here the way uvicorn will bind it (every address the host resolves to, as asyncio's
    `create_server` binds them) and let go; a port taken in the moment between is still
    uvicorn's line. Then both listeners are bound at once: `ops_listen` on an address `listen`
    takes (the same host:port, or localhost and 127.0.0.1 of one port) is named with both.
    """
    import errno

    from ._bind_errors import bind_failure

    listeners = [("listen", config.host_port), ("ops_listen", config.ops_host_port)]
    for name, host_port in listeners:
        if host_port is None:
            continue
        host, port = host_port
        try:
            with contextlib.ExitStack() as held:
                _bind(host, port, held)
        except OSError as error:
            raise click.UsageError(
                bind_failure(
                    error, host_flag=name, host=host, port_flag=name, port=port, free_port=f"{name} {host}:0"
                )
            ) from None
    ops = config.ops_host_port
    if ops is None or not ops[1] or not config.host_port[1]:  # port 0: the kernel picks a free one
        return
    with contextlib.ExitStack() as held:
        try:
            _bind(*config.host_port, held)  # bound alone a moment ago
        except OSError:
            return  # taken in the moment since: uvicorn's line says so
        try:
            _bind(*ops, held)
        except OSError as error:
            if error.errno != errno.EADDRINUSE:
                raise click.UsageError(
                    bind_failure(
                        error, host_flag="ops_listen", host=ops[0], port_flag="ops_listen", port=ops[1]
                    )
                ) from None
            raise click.UsageError(
                f"ops_listen {config.ops_listen} and listen {config.listen} would listen on the same "
                f"address and port: pass ops_listen a port other than {config.host_port[1]}"
            ) from None


def _bind(host: str, port: int, held: contextlib.ExitStack) -> None:
    """Bind and listen on every address `host` resolves to, as asyncio's `create_server` does
    (SO_REUSEADDR, IPv6 sockets IPv6-only); the sockets stay open until `held` closes."""
    import socket

    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    for family, kind, proto, _, address in dict.fromkeys(found):  # asyncio binds each once
        if not port:  # port 0: the kernel picks a free one; resolving was the check
            continue
        probe = held.enter_context(socket.socket(family, kind, proto))
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        probe.bind(address)
        probe.listen()  # a listening socket, as uvicorn's will be: a second bind to it fails


def _exit_on_signals() -> None:
    """SIGTERM ends the process like SIGINT: by an exception, so that atexit handlers run.

    uvicorn drains on SIGTERM, then raises the signal again under the handler it found. Left
    at the default, that kills the process at once, and the OpenTelemetry SDK's exit handlers,
    which flush the spans and metrics not exported yet, never run: a sidecar stopped by its
    orchestrator would lose its last batch every time.

    SIGINT ignored when the proxy started (a background job of a non-interactive shell) stops
    it all the same, since uvicorn handles it while serving; raised again under SIG_IGN, it
    left the process to exit 0, as if it had ended by itself. It ends with 130 here too.
    """
    import signal

    def handle(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handle)
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
