"""The `streamtap` command line: every flag also reads a STREAMTAP_* environment variable.

The group and its short commands (fake-upstream, check, rules) live here, and every command is
added to the group at the end of this module; proxy and demo are in _cli_proxy and _cli_demo."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from ._cli_demo import demo
from ._cli_params import HOST_ACCEPTED, Number, env_name, option, origin
from ._cli_proxy import proxy
from ._version import __version__
from .fake._config import MAX_CHUNKS, MAX_SECONDS

if TYPE_CHECKING:
    from .fake import Incident


class _Commands(click.Group):
    """The commands, each stopped by Ctrl-C with 130 and no "Aborted!": click turned the
    interrupt into exit status 1, which a script reads as `streamtap check` failing."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise SystemExit(130) from None


@click.group(
    cls=_Commands,
    context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "STREAMTAP"},
)
@click.version_option(__version__, prog_name="streamtap")
def main() -> None:
    """streamtap: observable, resilient OpenAI streaming calls.

    Exit status: 0 done, 1 `check` found a problem (or a command failed), 2 a usage error,
    130 stopped by SIGINT (Ctrl-C), 143 by SIGTERM (`proxy`, `demo`).
    """


def _incidents(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> tuple[Incident, ...]:
    from .fake import parse_incident

    try:
        return tuple(parse_incident(value) for value in values)
    except ValueError as err:
        raise click.BadParameter(str(err)) from None


@click.command("fake-upstream")
@option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    show_envvar=True,
    accepts=HOST_ACCEPTED,
    nonblank=True,
    help="Interface to bind.",
)
@option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8600,
    show_default=True,
    show_envvar=True,
    help="TCP port (0: a free one).",
)
@option(
    "--chunks",
    type=click.IntRange(0, MAX_CHUNKS),
    default=20,
    show_default=True,
    show_envvar=True,
    help="Content chunks per response.",
)
@option(
    "--ttft",
    type=Number(min=0, max=MAX_SECONDS),
    default=0.0,
    show_default=True,
    show_envvar=True,
    help="Seconds to the first token.",
)
@option(
    "--gap",
    type=Number(min=0, max=MAX_SECONDS),
    default=0.0,
    show_default=True,
    show_envvar=True,
    help="Seconds between content chunks.",
)
@option(
    "--api-key",
    default=None,
    show_envvar=True,
    accepts="the key clients must send (leave --api-key out for none: an empty key refuses them all)",
    nonblank=True,
    help="Require 'Authorization: Bearer KEY' (else 401).",
)
@option("--seed", default=0, show_default=True, show_envvar=True, help="Seed of the incident RNG.")
@option(
    "--incident",
    multiple=True,
    callback=_incidents,
    show_envvar=True,
    empty_ok=True,  # no incidents, as unset
    help="WINDOW:PROBABILITY:SPEC, e.g. '120-240:0.4:status=503' or '*:2%:reset' (repeatable).",
)
@option(
    "--replay-on-resume",
    is_flag=True,
    show_envvar=True,
    help="Stream a retrieved response from its start whatever starting_after says.",
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
    replay_on_resume: bool,
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
            replay_on_resume=replay_on_resume,
        )
    except ValueError as err:
        raise click.UsageError(str(err)) from None
    try:
        run_until_signal(config, lambda url: click.echo(url))
    except OSError as error:
        from ._bind_errors import bind_failure

        ctx = click.get_current_context()
        port_origin = origin(ctx, "port")
        free_port = f"{port_origin}=0" if port_origin.startswith("STREAMTAP_") else None
        raise click.UsageError(
            bind_failure(
                error,
                host_flag=origin(ctx, "host"),
                host=host,
                port_flag=port_origin,
                port=port,
                free_port=free_port,
            )
        ) from None


@click.command("check")
@option(
    "--base-url",
    default=None,
    show_envvar=True,
    accepts="an http:// or https:// base URL",
    help="API base URL [default: $OPENAI_BASE_URL or OpenAI's].",
)
@option(
    "--api-key-env",
    default="OPENAI_API_KEY",
    metavar="NAME",
    show_default=True,
    show_envvar=True,
    accepts="the name of the variable that holds the key",
    callback=env_name,
    help="Environment variable that holds the API key.",
)
@option(
    "--timeout",
    default=5.0,
    type=Number(min=0, min_open=True, max=300),
    show_default=True,
    show_envvar=True,
    help="Seconds allowed to each network step, as a whole (the GET /models request head and body together).",
)
@option(
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

    report = preflight(base_url=base_url, api_key_env=api_key_env, timeout=timeout)
    click.echo(report.to_json() if as_json else str(report))
    if not report.ok:
        raise SystemExit(1)


@click.command("rules")
@option(
    "--slo",
    type=Number(min=0, max=1, min_open=True, max_open=True),
    default=0.99,
    show_default=True,
    show_envvar=True,
    help="SLO target: the fraction of calls that must succeed.",
)
@option(
    "--compress",
    type=Number(min=0, min_open=True),
    default=1.0,
    show_default=True,
    show_envvar=True,
    help="Divide every window, `for:` and `keep_firing_for:` by this (60 turns 1h into 1m), for demos and tests.",
)
@option(
    "--runbook-base",
    default="docs/runbooks.md",
    show_default=True,
    show_envvar=True,
    accepts="the URL of the runbooks",
    help="URL of the runbooks; each alert links to its #anchor.",
)
@option(
    "--keep-firing-for",
    default="15m",
    show_default=True,
    show_envvar=True,
    nonblank=True,
    accepts="a Prometheus duration such as 15m, or 0s",
    help="How long the alerts on 5m ratios keep firing through a lapse of their condition; "
    "0s leaves the field out, for Prometheus before 2.42.",
)
def rules(slo: float, compress: float, runbook_base: str, keep_firing_for: str) -> None:
    """Print streamtap's Prometheus recording and alerting rules as YAML.

    Save the output as a rule file: `streamtap rules --slo 0.995 > streamtap.rules.yml`.
    """
    import shlex

    from .monitoring.rules import Params, dump, render

    # The command that made the file, so that running it again remakes it.
    # Shortest round-trip form (":g" cut 7.1234567 to 7.12346): the header's command remakes the file.
    command = f"streamtap rules --slo {slo} --compress {repr(compress).removesuffix('.0')}"
    if runbook_base != Params().runbook_base:
        command += f" --runbook-base {shlex.quote(runbook_base)}"
    if keep_firing_for != Params().keep_firing_for:
        command += f" --keep-firing-for {shlex.quote(keep_firing_for)}"
    header = f"# Generated by `{command}`.\n"
    try:
        params = Params(slo_target=slo, runbook_base=runbook_base, keep_firing_for=keep_firing_for)
        text = dump(render(params.compressed(compress)), header)
    except ValueError as error:
        # A runbook base empty or with a #fragment, a keep_firing_for that is no duration, or a
        # compression so large that a window drops below 1ms.
        hint = next(
            (name for name in ("runbook_base", "keep_firing_for") if str(error).startswith(name)), "compress"
        )
        raise click.BadParameter(str(error), param_hint=origin(click.get_current_context(), hint)) from None
    for long, short, factor, severity in Params(slo_target=slo).unreachable_burn_pairs():
        click.echo(
            f"streamtap rules: with --slo {slo:g} the error budget is {1 - slo:.4g}, so a burn rate is at most "
            f"{1 / (1 - slo):.3g}x (every call failing): StreamtapErrorBudgetBurn's {factor:g}x pair over {long} "
            f"and {short} ({severity}) can never fire; a lower SLO needs its own burn factors",
            err=True,
        )
    if not runbook_base.startswith(("https://", "http://")):
        # Pages land in a pager, a chat or Grafana, where a path has nothing to resolve against.
        click.echo(
            f"streamtap rules: --runbook-base {runbook_base!r} is not an http(s) URL, so each alert's "
            "runbook_url is a dead link wherever the page is read; pass the URL where your team "
            "reads docs/runbooks.md, e.g. --runbook-base https://git.example.com/you/streamtap/blob/main/docs/runbooks.md",
            err=True,
        )
    click.echo(text, nl=False)


# Every command joins the group here, in this order; proxy and demo live in their own modules.
main.add_command(fake_upstream)
main.add_command(check)
main.add_command(proxy)
main.add_command(rules)
main.add_command(demo)
