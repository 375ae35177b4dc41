"""What a demo run will do, decided from its flags and environment alone (pure).

The in-process fake gets the full story and traffic; the real API (`--real`, or any https
`--base-url`) gets a low, bounded rate of short answers, because every call is billed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from .. import BreakerSettings, Fallback, Policy
from .._fallback import FORWARDING_URL_ACCEPTED, forwarding_problem, shown_url
from ._story import DEFAULT_DURATION, FALLBACK_MODEL, PRIMARY_MODEL, check_duration
from ._traffic import FAKE_WORKLOADS, REAL_WORKLOADS, Workload

OPENAI_BASE_URL = "https://api.openai.com/v1"

# Fast retries and short timeouts: the fake's faults resolve in a second or two.
FAKE_POLICY = Policy(
    max_attempts=3,
    backoff_base=0.05,
    backoff_cap=0.5,
    max_retry_wait=3.0,
    max_retry_after=5.0,
    first_token_timeout=1.5,
    idle_timeout=1.5,
    connect_timeout=2.0,
    total_timeout=10.0,
    breaker=BreakerSettings(window=10.0, min_requests=10, failure_ratio=0.5, open_for=5.0),
)


def fake_policy(duration: float) -> Policy:
    """FAKE_POLICY with the breaker's window and open time at the story's pace.

    Its phases shrink with a shorter run (a 20 s story is told 12x faster than the default's
    four minutes); a breaker open for 5 s would outlast a 3 s recovery phase and end the story
    with callers refused. Never below a 2 s window and 1 s open: the fake's rate (14 calls/s)
    must still fill the window's `min_requests`.
    """
    pace = min(1.0, duration / DEFAULT_DURATION)
    breaker = FAKE_POLICY.breaker
    return replace(
        FAKE_POLICY,
        breaker=replace(
            breaker, window=max(2.0, breaker.window * pace), open_for=max(1.0, breaker.open_for * pace)
        ),
    )


# A real model can think for a while before its first token.
REAL_POLICY = Policy(max_attempts=3, first_token_timeout=20.0, idle_timeout=30.0, total_timeout=60.0)


class DemoError(Exception):
    """A problem the user can fix (printed without a traceback, exit code 2)."""


@dataclass(frozen=True)
class DemoOptions:
    """The `streamtap demo` flags.

    Args:
        duration: seconds the story takes (>= 20).
        seed: seed of the fault draws and the workers' choices.
        ui: True for the live view, False for log lines, None to pick by whether out is a TTY.
        real: call the real API with OPENAI_API_KEY, at a low, bounded rate.
        base_url: send the instrumented traffic there instead of the in-process fake.
        proxy_url: send the proxy share to this external proxy instead of an in-process one.
        metrics_addr: interface of the /metrics server.
        metrics_port: its port (0: a free one).
        stack: True to require Prometheus+Alertmanager (installing them as root), False for
            none, None to use them when on PATH.
        model: the model to request (default gpt-4o, or gpt-4o-mini with --real).
    """

    duration: float = DEFAULT_DURATION
    seed: int = 0
    ui: bool | None = None
    real: bool = False
    base_url: str | None = None
    proxy_url: str | None = None
    metrics_addr: str = "127.0.0.1"
    metrics_port: int = 9464
    stack: bool | None = None
    model: str | None = None


@dataclass(frozen=True)
class Plan:
    """The decisions `plan` makes: upstream (None: the in-process fake), key, model, traffic."""

    base_url: str | None  # None: the in-process fake
    api_key: str
    model: str
    workloads: tuple[Workload, ...]
    policy: Policy
    fallbacks: tuple[Fallback, ...]
    max_tokens: int | None
    description: str


def plan(options: DemoOptions, environ: Mapping[str, str]) -> Plan:
    """Decide upstream, key, model and traffic profile from the options (pure).

    Raises:
        DemoError: --real without OPENAI_API_KEY, an empty --metrics-addr, a bad URL.
    """
    check_duration(options.duration)
    if not isinstance(options.metrics_addr, str) or not options.metrics_addr.strip():
        # serve_metrics would raise it as a ValueError, a traceback.
        raise DemoError(
            f"--metrics-addr must be an interface address or name, e.g. 127.0.0.1 or 0.0.0.0, "
            f"got {options.metrics_addr!r}"
        )
    for flag, url in (("--base-url", options.base_url), ("--proxy-url", options.proxy_url)):
        _check_url(flag, url)
    key = environ.get("OPENAI_API_KEY", "").strip()
    if options.real:
        if not key:
            raise DemoError(
                "--real needs an API key: set OPENAI_API_KEY (and OPENAI_BASE_URL for another "
                "OpenAI-compatible API), or run the demo without --real to use the built-in fake upstream."
            )
        base = options.base_url or environ.get("OPENAI_BASE_URL", "").strip() or OPENAI_BASE_URL
        _check_url("--base-url" if options.base_url else "OPENAI_BASE_URL", base)
        fallbacks = (Fallback.non_streaming(), Fallback.cached())
        model = options.model or "gpt-4o-mini"
        return Plan(base, key, model, REAL_WORKLOADS, REAL_POLICY, fallbacks, 32, f"the real API at {base}")
    full = (Fallback.model(FALLBACK_MODEL), Fallback.non_streaming(), Fallback.cached())
    model = options.model or PRIMARY_MODEL
    if options.base_url is None:
        return Plan(
            None, "sk-streamtap-demo", model, FAKE_WORKLOADS, fake_policy(options.duration), full, None, ""
        )
    # An https upstream is probably a real, billed API: keep the traffic as low as --real's.
    billed = options.base_url.lower().startswith("https://")
    workloads, policy = (
        (REAL_WORKLOADS, REAL_POLICY) if billed else (FAKE_WORKLOADS, fake_policy(options.duration))
    )
    return Plan(
        options.base_url,
        key or "sk-streamtap-demo",
        model,
        workloads,
        policy,
        full,
        32 if billed else None,
        f"the upstream at {options.base_url}" + (" (low traffic: https)" if billed else ""),
    )


def _check_url(name: str, url: str | None) -> None:
    """Refuse, naming the flag or variable, a URL no request can be sent to (a port out of
    range, a broken [IPv6] host): else the in-process proxy's config raises it as a traceback,
    or every call of the run fails."""
    if url is None:
        return
    problem = forwarding_problem(url)
    if problem is not None:
        raise DemoError(f"{name} must be {FORWARDING_URL_ACCEPTED}, got {shown_url(url)!r}: {problem}")
