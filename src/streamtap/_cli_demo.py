"""`streamtap demo`: its flags, handed to streamtap.demo as DemoOptions."""

from __future__ import annotations

import click

from ._cli_params import HOST_ACCEPTED, Number, http_url, option


@click.command("demo")
@option(
    "--duration",
    type=Number(min=20),
    default=240.0,
    show_default=True,
    show_envvar=True,
    help="Seconds the story takes; shorter or longer runs tell the same story at another pace.",
)
@option("--seed", default=0, show_default=True, show_envvar=True, help="Seed of the fault draws.")
@option(
    "--ui/--no-ui",
    default=None,
    show_envvar=True,
    help="Live terminal view, or plain log lines.  [default: the view on a terminal, lines otherwise]",
)
@option(
    "--real",
    is_flag=True,
    show_envvar=True,
    help="Call the real API with OPENAI_API_KEY (and OPENAI_BASE_URL) at a low, bounded rate.",
)
@option(
    "--base-url",
    default=None,
    callback=http_url,
    show_envvar=True,
    accepts="an http:// or https:// base URL",
    help="Send the traffic to this upstream instead of the built-in fake (no injected incidents).",
)
@option(
    "--proxy-url",
    default=None,
    callback=http_url,
    show_envvar=True,
    accepts="an http:// or https:// base URL",
    help="Send the proxy share of the traffic to this streamtap proxy instead of an in-process one.",
)
@option(
    "--metrics-addr",
    default="127.0.0.1",
    show_default=True,
    show_envvar=True,
    accepts=HOST_ACCEPTED,
    nonblank=True,
    help="Interface of /metrics.",
)
@option(
    "--metrics-port",
    type=click.IntRange(min=0, max=65535),
    default=9464,
    show_default=True,
    show_envvar=True,
    help="Port of /metrics (0: a free one).",
)
@option(
    "--stack/--no-stack",
    default=None,
    show_envvar=True,
    help="Run Prometheus and Alertmanager to show alerts (--stack installs them with apt-get as root).  "
    "[default: when both are on PATH]",
)
@option(
    "--model",
    default=None,
    show_envvar=True,
    accepts="a model name",
    nonblank=True,
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
