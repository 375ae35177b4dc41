"""The `streamtap` command line: every flag also reads a STREAMTAP_* environment variable."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import click

from ._version import __version__

if TYPE_CHECKING:
    from .fake import Incident


class _Number(click.FloatRange):
    """click's FloatRange, which lets `nan` through (every comparison with it is false), and
    `inf` when it has no maximum: no number option of streamtap's means "for ever"."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        number: float = super().convert(value, param, ctx)
        if number != number:
            self.fail(f"{value!r} is not a number", param, ctx)
        if number in (math.inf, -math.inf):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


def _http_url(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """An http(s) base URL with a host, or None."""
    if value is None:
        return None
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(value)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        ok = False
    if not ok:
        raise click.BadParameter(f"must be an http:// or https:// URL with a host, got {value!r}")
    return value


@click.group(context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "STREAMTAP"})
@click.version_option(__version__, prog_name="streamtap")
def main() -> None:
    """streamtap: observable, resilient OpenAI streaming calls."""


def _incidents(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> tuple[Incident, ...]:
    from .fake import parse_incident

    try:
        return tuple(parse_incident(value) for value in values)
    except ValueError as err:
        raise click.BadParameter(str(err)) from None


@main.command("fake-upstream")
@click.option("--host", default="127.0.0.1", show_default=True, show_envvar=True, help="Interface to bind.")
@click.option("--port", default=8600, show_default=True, show_envvar=True, help="TCP port (0: a free one).")
@click.option(
    "--chunks", default=20, show_default=True, show_envvar=True, help="Content chunks per response."
)
@click.option("--ttft", default=0.0, show_default=True, show_envvar=True, help="Seconds to the first token.")
@click.option(
    "--gap", default=0.0, show_default=True, show_envvar=True, help="Seconds between content chunks."
)
@click.option(
    "--api-key", default=None, show_envvar=True, help="Require 'Authorization: Bearer KEY' (else 401)."
)
@click.option("--seed", default=0, show_default=True, show_envvar=True, help="Seed of the incident RNG.")
@click.option(
    "--incident",
    multiple=True,
    callback=_incidents,
    show_envvar=True,
    help="WINDOW:PROBABILITY:SPEC, e.g. '120-240:0.4:status=503' or '*:2%:reset' (repeatable).",
)
def fake_upstream(
    host: str,
    port: int,
    chunks: int,
    ttft: float,
    gap: float,
    api_key: str | None,
    seed: int,
    incident: tuple[Incident, ...],
) -> None:
    """Serve a fake OpenAI upstream with fault injection until Ctrl-C.

    Prints the base URL first. Faults: the x-fake-fault request header (see the
    streamtap.fake docstring for the grammar) and --incident windows.
    """
    from .fake import FakeConfig
    from .fake._upstream import run_until_signal

    try:
        config = FakeConfig(
            chunks=chunks,
            ttft=ttft,
            gap=gap,
            api_key=api_key,
            seed=seed,
            incidents=incident,
            host=host,
            port=port,
        )
    except ValueError as err:
        raise click.UsageError(str(err)) from None
    try:
        run_until_signal(config, lambda url: click.echo(url))
    except OSError as error:
        from ._bind_errors import bind_failure

        raise click.UsageError(
            bind_failure(error, host_flag="--host", host=host, port_flag="--port", port=port)
        ) from None


@main.command("check")
@click.option(
    "--base-url", default=None, show_envvar=True, help="API base URL [default: $OPENAI_BASE_URL or OpenAI's]."
)
@click.option(
    "--api-key-env",
    default="OPENAI_API_KEY",
    metavar="NAME",
    show_default=True,
    show_envvar=True,
    help="Environment variable that holds the API key.",
)
@click.option(
    "--timeout",
    default=5.0,
    type=_Number(min=0, min_open=True, max=300),
    show_default=True,
    show_envvar=True,
    help="Seconds allowed to each network step.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    envvar="STREAMTAP_CHECK_JSON",
    show_envvar=True,
    help="Print the report as JSON.",
)
def check(base_url: str | None, api_key_env: str, timeout: float, as_json: bool) -> None:
    """Check the key, DNS, TCP, TLS and an authenticated GET /models; exit 1 if any fails.

    The key is never printed, only a fingerprint like sk-...XYZ9.
    """
    from ._preflight import preflight

    if not api_key_env or "=" in api_key_env or "\0" in api_key_env:
        raise click.BadParameter(
            f"{api_key_env!r} is not an environment variable name", param_hint="--api-key-env"
        )
    report = preflight(base_url=base_url, api_key_env=api_key_env, timeout=timeout)
    click.echo(report.to_json() if as_json else str(report))
    if not report.ok:
        raise SystemExit(1)


@main.command()
@click.option(
    "--upstream",
    default=None,
    show_envvar=True,
    help="The OpenAI-compatible base URL to forward to.  [default: https://api.openai.com/v1]",
)
@click.option(
    "--listen", default=None, show_envvar=True, help="host:port to listen on.  [default: 127.0.0.1:8787]"
)
@click.option(
    "--ops-listen",
    default=None,
    show_envvar=True,
    help="A second host:port serving only /metrics, /healthz and /readyz (e.g. 0.0.0.0:9464 in a pod).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    envvar="STREAMTAP_PROXY_CONFIG",
    show_envvar=True,
    help="A TOML file with upstream, listen, [policy] and [[fallbacks]].",
)
@click.option(
    "--upstream-api-key-env",
    default=None,
    show_envvar=True,
    help="Name of an environment variable holding a key the proxy sends upstream (then clients must "
    "present the token from --client-token-env).",
)
@click.option(
    "--client-token-env",
    default=None,
    show_envvar=True,
    help="Name of an environment variable holding the bearer token clients must present.",
)
@click.option(
    "--max-body",
    type=click.IntRange(min=1),
    default=None,
    show_envvar=True,
    help="Largest request body of a chat completions or responses call, bytes (held whole).  [default: 10 MiB]",
)
@click.option(
    "--max-upload",
    type=click.IntRange(min=1),
    default=None,
    show_envvar=True,
    help="Largest request body of any other /v1 request, bytes (streamed through).  [default: 512 MiB]",
)
@click.option(
    "--pass-through-timeout",
    type=_Number(min=0, min_open=True),
    default=None,
    show_envvar=True,
    help="Seconds a request to any other /v1 path waits for the upstream to take its body, to "
    "begin its answer, and for each next piece of it.  [default: 600]",
)
@click.option(
    "--shutdown-grace",
    type=_Number(min=0),
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

    from ._proxy_config import load_config
    from ._proxy_server import serve

    def secret(name: str | None, flag: str) -> str | None:
        if name is None:
            return None
        value = os.environ.get(name)
        if not value:
            raise click.BadParameter(f"environment variable {name} is empty or unset", param_hint=flag)
        return value

    try:
        config = load_config(
            config_path,
            upstream=upstream,
            listen=listen,
            ops_listen=ops_listen,
            upstream_api_key=secret(upstream_api_key_env, "--upstream-api-key-env"),
            client_token=secret(client_token_env, "--client-token-env"),
            max_body=max_body,
            max_upload=max_upload,
            pass_through_timeout=pass_through_timeout,
            shutdown_grace=shutdown_grace,
        )
    except (ValueError, OSError) as error:
        raise click.UsageError(str(error)) from None
    from ._telemetry import setup_telemetry

    # OTLP export from the standard OTEL_* variables, Prometheus on /metrics.
    _exit_on_sigterm()
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


def _exit_on_sigterm() -> None:
    """SIGTERM ends the process like SIGINT: by an exception, so that atexit handlers run.

    uvicorn drains on SIGTERM, then raises the signal again under the handler it found. Left
    at the default, that kills the process at once, and the OpenTelemetry SDK's exit handlers,
    which flush the spans and metrics not exported yet, never run: a sidecar stopped by its
    orchestrator would lose its last batch every time.
    """
    import signal

    def handle(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handle)


@main.command("rules")
@click.option(
    "--slo",
    type=_Number(min=0, max=1, min_open=True, max_open=True),
    default=0.99,
    show_default=True,
    show_envvar=True,
    help="SLO target: the fraction of calls that must succeed.",
)
@click.option(
    "--compress",
    type=_Number(min=0, min_open=True),
    default=1.0,
    show_default=True,
    show_envvar=True,
    help="Divide every window and `for:` by this (60 turns 1h into 1m), for demos and tests.",
)
@click.option(
    "--runbook-base",
    default="docs/runbooks.md",
    show_default=True,
    show_envvar=True,
    help="URL of the runbooks; each alert links to its #anchor.",
)
def rules(slo: float, compress: float, runbook_base: str) -> None:
    """Print streamtap's Prometheus recording and alerting rules as YAML.

    Save the output as a rule file: `streamtap rules --slo 0.995 > streamtap.rules.yml`.
    """
    from .monitoring.rules import Params, dump, render

    header = f"# Generated by `streamtap rules --slo {slo} --compress {compress:g}`.\n"
    try:
        text = dump(render(Params(slo_target=slo, runbook_base=runbook_base).compressed(compress)), header)
    except (
        ValueError
    ) as error:  # an empty runbook base, or a compression so large that a window drops below 1ms
        hint = "--runbook-base" if "runbook_base" in str(error) else "--compress"
        raise click.BadParameter(str(error), param_hint=hint) from None
    if not runbook_base.startswith(("https://", "http://")):
        # Pages land in a pager, a chat or Grafana, where a path has nothing to resolve against.
        click.echo(
            f"streamtap rules: --runbook-base {runbook_base!r} is not an http(s) URL, so each alert's "
            "runbook_url is a dead link wherever the page is read; pass the URL where your team "
            "reads docs/runbooks.md, e.g. --runbook-base https://git.example.com/you/streamtap/blob/main/docs/runbooks.md",
            err=True,
        )
    click.echo(text, nl=False)


@main.command("demo")
@click.option(
    "--duration",
    type=_Number(min=20),
    default=240.0,
    show_default=True,
    show_envvar=True,
    help="Seconds the story takes; shorter or longer runs tell the same story at another pace.",
)
@click.option("--seed", default=0, show_default=True, show_envvar=True, help="Seed of the fault draws.")
@click.option(
    "--ui/--no-ui",
    default=None,
    show_envvar=True,
    help="Live terminal view, or plain log lines.  [default: the view on a terminal, lines otherwise]",
)
@click.option(
    "--real",
    is_flag=True,
    show_envvar=True,
    help="Call the real API with OPENAI_API_KEY (and OPENAI_BASE_URL) at a low, bounded rate.",
)
@click.option(
    "--base-url",
    default=None,
    callback=_http_url,
    show_envvar=True,
    help="Send the traffic to this upstream instead of the built-in fake (no injected incidents).",
)
@click.option(
    "--proxy-url",
    default=None,
    callback=_http_url,
    show_envvar=True,
    help="Send the proxy share of the traffic to this streamtap proxy instead of an in-process one.",
)
@click.option(
    "--metrics-addr", default="127.0.0.1", show_default=True, show_envvar=True, help="Interface of /metrics."
)
@click.option(
    "--metrics-port",
    type=click.IntRange(min=0, max=65535),
    default=9464,
    show_default=True,
    show_envvar=True,
    help="Port of /metrics (0: a free one).",
)
@click.option(
    "--stack/--no-stack",
    default=None,
    show_envvar=True,
    help="Run Prometheus and Alertmanager to show alerts (--stack installs them with apt-get as root).  "
    "[default: when both are on PATH]",
)
@click.option(
    "--model",
    default=None,
    show_envvar=True,
    help="Model to request.  [default: gpt-4o; --real: gpt-4o-mini]",
)
def demo(
    duration: float,
    seed: int,
    ui: bool | None,
    real: bool,
    base_url: str | None,
    proxy_url: str | None,
    metrics_addr: str,
    metrics_port: int,
    stack: bool | None,
    model: str | None,
) -> None:
    """Show streamtap at work for a few minutes: traffic, incidents, retries, fallbacks, alerts.

    A fake OpenAI upstream on loopback injects a story (an error-rate spike, a rate-limit storm,
    stalls and drops, recovery) into traffic made with sync and async SDK clients through
    streamtap.instrument and through the sidecar proxy. Metrics are served on /metrics; the
    run ends with a summary. Ctrl-C stops early (exit code 130).
    """
    from .demo import DemoError, DemoOptions, run

    options = DemoOptions(
        duration=duration,
        seed=seed,
        ui=ui,
        real=real,
        base_url=base_url,
        proxy_url=proxy_url,
        metrics_addr=metrics_addr,
        metrics_port=metrics_port,
        stack=stack,
        model=model,
    )
    try:
        code = run(options)
    except DemoError as error:
        click.echo(f"streamtap demo: {error}", err=True)
        raise SystemExit(2) from None
    raise SystemExit(code)
