"""Serving metrics: HTTP server with OpenMetrics negotiation, WSGI/ASGI apps, multi-process."""

from __future__ import annotations

import errno
import gzip
import multiprocessing
import socket
import threading
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from streamtap._bind_errors import bind_failure
from streamtap._exposition import (
    exposition_registry,
    mark_process_dead,
    metrics_asgi_app,
    metrics_wsgi_app,
    serve_metrics,
)
from streamtap._otel_traces import OtelTraceRecorder
from streamtap._prometheus import PrometheusRecorder

from . import _mp_worker
from ._builder import two_429s_then_success

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
CHAT = {"api": "chat_completions", "model": "gpt-4o-mini"}


def test_serve_metrics_scraped_over_http_with_openmetrics(
    registry: CollectorRegistry, tracer_provider: TracerProvider
) -> None:
    traces = OtelTraceRecorder(tracer_provider)
    two_429s_then_success([traces, PrometheusRecorder(registry, trace_ids=traces)])
    server = serve_metrics(port=0, registry=registry)
    try:
        assert server.server_address[0] == "127.0.0.1"
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        request = urllib.request.Request(
            url, headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            content_type = response.headers["Content-Type"]
            body = response.read().decode()
        with urllib.request.urlopen(url, timeout=5) as response:
            plain = response.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    assert content_type.startswith("application/openmetrics-text")
    assert body.rstrip().endswith("# EOF")
    assert 'streamtap_requests_total{api="chat_completions",model="gpt-4o-mini",outcome="ok"} 1.0' in body
    assert '# {trace_id="' in body
    assert "# EOF" not in plain  # the classic text format when OpenMetrics is not asked for
    assert 'streamtap_requests_total{api="chat_completions",model="gpt-4o-mini",outcome="ok"} 1.0' in plain


def call_wsgi(app: Any, accept: str = "") -> tuple[str, bytes]:
    headers, body = scrape_wsgi(app, {"HTTP_ACCEPT": accept})
    return headers["content-type"], body


def scrape_wsgi(app: Any, environ: dict[str, str]) -> tuple[dict[str, str], bytes]:
    seen: dict[str, str] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        seen["status"] = status
        seen.update({k.lower(): v for k, v in headers})

    chunks: Iterable[bytes] = app(
        {"REQUEST_METHOD": "GET", "PATH_INFO": "/metrics", **environ}, start_response
    )
    assert seen.pop("status").startswith("200")
    return seen, b"".join(chunks)


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="this host has no IPv6 loopback (::1)")
def test_serve_metrics_on_ipv6_loopback(registry: CollectorRegistry) -> None:
    two_429s_then_success([PrometheusRecorder(registry)])
    server = serve_metrics(port=0, addr="::1", registry=registry)
    try:
        assert server.address_family == socket.AF_INET6
        with urllib.request.urlopen(f"http://[::1]:{server.server_port}/metrics", timeout=5) as response:
            body = response.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    assert 'streamtap_requests_total{api="chat_completions",model="gpt-4o-mini",outcome="ok"} 1.0' in body


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param(
            {"port": "9464"}, r"serve_metrics port must be an integer 0\.\.65535 .*got '9464'", id="port-text"
        ),
        pytest.param({"port": 70000}, r"serve_metrics port must be an integer 0\.\.65535", id="port-range"),
        pytest.param(
            {"port": 0, "addr": None}, r"serve_metrics addr must be an interface address", id="addr"
        ),
    ],
)
def test_serve_metrics_names_a_bad_argument(kwargs: dict[str, Any], message: str) -> None:
    """Before: socket.gaierror 'Servname not supported for ai_socktype' or an OverflowError."""
    with pytest.raises(ValueError, match=message):
        serve_metrics(**kwargs)


def test_serve_metrics_on_a_taken_port_names_the_port(registry: CollectorRegistry) -> None:
    """Before: the socket's bare `OSError: [Errno 98] Address already in use`."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=f"serve_metrics port {port} ") as raised:
            serve_metrics(port=port, registry=registry)
    assert raised.value.errno == errno.EADDRINUSE
    assert str(raised.value) == (
        f"[Errno {errno.EADDRINUSE}] serve_metrics port {port} on 127.0.0.1: Address already in use; "
        "pass another port, or port=0 for a free one"
    )
    # The demo's --metrics-port error is still said in the flags' terms.
    assert bind_failure(
        raised.value, host_flag="--addr", host="127.0.0.1", port_flag="--port", port=port
    ) == (
        f"--port {port} on 127.0.0.1: Address already in use; pass another port, or --port 0 for a free one"
    )


def test_serve_metrics_on_an_unknown_address_names_the_address(registry: CollectorRegistry) -> None:
    with pytest.raises(socket.gaierror, match=r"serve_metrics addr nosuch\.invalid: .*e\.g\. 127\.0\.0\.1"):
        serve_metrics(port=0, addr="nosuch.invalid", registry=registry)  # .invalid never resolves


@pytest.mark.parametrize("make_app", [metrics_wsgi_app, metrics_asgi_app], ids=["wsgi", "asgi"])
def test_apps_name_a_registry_of_another_type(make_app: Any) -> None:
    """Before: accepted, then every scrape failed ('int' object has no attribute 'collect')."""
    with pytest.raises(
        TypeError, match=rf"^{make_app.__name__} registry must be a prometheus_client CollectorRegistry"
    ):
        make_app(9464)


@pytest.mark.parametrize(
    ("pid", "path", "message"),
    [
        pytest.param(
            1234, None, "needs the multi-process directory: set PROMETHEUS_MULTIPROC_DIR", id="no-dir"
        ),
        pytest.param(
            "1234", "/tmp", r"pid must be a process id \(an integer >= 1\), got '1234'", id="pid-text"
        ),
        pytest.param(1234, "", "path must be a directory path or None", id="path-empty"),
    ],
)
def test_mark_process_dead_names_a_bad_argument(
    monkeypatch: pytest.MonkeyPatch, pid: Any, path: Any, message: str
) -> None:
    """Before: TypeError 'expected str, bytes or os.PathLike object, not NoneType' without the
    variable set, and a pid given as text matched no file, silently."""
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    with pytest.raises(ValueError, match=f"^mark_process_dead {message}"):
        mark_process_dead(pid, path)


def test_wsgi_app_serves_the_registry(registry: CollectorRegistry) -> None:
    two_429s_then_success([PrometheusRecorder(registry)])
    content_type, body = call_wsgi(metrics_wsgi_app(registry), accept=OPENMETRICS)
    assert content_type.startswith("application/openmetrics-text")
    assert (
        b'streamtap_retries_total{api="chat_completions",model="gpt-4o-mini",reason="rate_limited"} 2.0'
        in body
    )


async def _scrape(
    app: Any, headers: list[tuple[bytes, bytes]], query: bytes = b""
) -> tuple[dict[bytes, bytes], bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/metrics", "query_string": query, "headers": headers}
    await app(scope, receive, send)
    assert sent[0]["status"] == 200
    return dict(sent[0]["headers"]), b"".join(m.get("body", b"") for m in sent[1:])


@pytest.mark.anyio
async def test_asgi_app_serves_the_registry(registry: CollectorRegistry) -> None:
    two_429s_then_success([PrometheusRecorder(registry)])
    headers, body = await _scrape(metrics_asgi_app(registry), [(b"accept", OPENMETRICS.encode())])
    assert headers[b"content-type"].startswith(b"application/openmetrics-text")
    assert b'streamtap_attempts_total{api="chat_completions",model="gpt-4o-mini",result="error"} 2.0' in body
    assert body.endswith(b"# EOF\n")


@pytest.mark.anyio
async def test_asgi_app_writes_the_exposition_off_the_event_loops_thread(registry: CollectorRegistry) -> None:
    # Tens of ms of CPU with many series: in the loop's thread it would stop every request.
    threads: list[threading.Thread] = []

    class Watched(Collector):
        def collect(self) -> Iterator[Metric]:
            threads.append(threading.current_thread())
            return iter(())

    registry.register(Watched())
    await _scrape(metrics_asgi_app(registry), [])
    assert threads and threads[0] is not threading.current_thread()


@pytest.mark.anyio
async def test_asgi_app_negotiates_as_prometheus_clients_apps_do(registry: CollectorRegistry) -> None:
    two_429s_then_success([PrometheusRecorder(registry)])
    app = metrics_asgi_app(registry)
    # The text format without an OpenMetrics Accept; gzip when accepted, among other codings.
    headers, body = await _scrape(app, [(b"Accept-Encoding", b"br;q=1.0, gzip;q=0.8")])
    assert headers[b"content-type"].startswith(b"text/plain; version=0.0.4")
    assert headers[b"content-encoding"] == b"gzip"
    text = gzip.decompress(body)
    assert b"# EOF" not in text
    assert (
        b'streamtap_retries_total{api="chat_completions",model="gpt-4o-mini",reason="rate_limited"} 2.0'
        in text
    )
    # name[] restricts the metrics served, as in prometheus_client.
    _, only = await _scrape(app, [], query=b"name[]=streamtap_retries_total")
    families = {line.split()[2] for line in only.decode().splitlines() if line.startswith("# TYPE")}
    assert families == {"streamtap_retries_total"}


@pytest.mark.parametrize("accept", ["application/openmetrics-text; version=bad", "text/plain; version=1.x"])
@pytest.mark.anyio
async def test_an_accept_version_that_is_no_number_gets_the_text_format(
    registry: CollectorRegistry, accept: str
) -> None:
    """prometheus_client's own negotiation raises on it (TypeError): a 500 for one odd header."""
    two_429s_then_success([PrometheusRecorder(registry)])
    headers, body = await _scrape(metrics_asgi_app(registry), [(b"accept", accept.encode())])
    assert headers[b"content-type"].startswith(b"text/plain; version=0.0.4")
    assert b"streamtap_retries_total" in body
    content_type, _ = call_wsgi(metrics_wsgi_app(registry), accept=accept)
    assert content_type.startswith("text/plain; version=0.0.4")


class _OddNames(Collector):
    """Names prometheus_client escapes: a colon in a metric name, a dot in a label name."""

    def collect(self) -> Iterator[Metric]:
        colon = Metric("job:requests", "A recording-rule style name.", "counter")
        colon.add_sample("job:requests_total", {"code": "200"}, 3.0)
        dotted = Metric("odd", 'A "quoted"\\ help.', "gauge")
        dotted.add_sample("odd", {"http.method": "GET", "path": 'a\n"b"'}, 1.5)
        yield colon
        yield dotted


SCRAPES = {
    "openmetrics": {"HTTP_ACCEPT": "application/openmetrics-text; version=1.0.0; charset=utf-8"},
    "openmetrics-no-version": {"HTTP_ACCEPT": "application/openmetrics-text"},
    "openmetrics-utf8": {"HTTP_ACCEPT": "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8"},
    "prometheus-3": {
        "HTTP_ACCEPT": "application/openmetrics-text;version=1.0.0;escaping=underscores;q=0.5,"
        "text/plain;version=1.0.0;escaping=underscores;q=0.4,*/*;q=0.1",
        "HTTP_ACCEPT_ENCODING": "gzip",
    },
    "text": {},
    "text-gzip-name": {"HTTP_ACCEPT_ENCODING": "gzip", "QUERY_STRING": "name[]=streamtap_retries_total"},
}


@pytest.mark.parametrize("odd", [False, True], ids=["streamtap", "odd-names"])
@pytest.mark.parametrize("environ", SCRAPES.values(), ids=SCRAPES.keys())
@pytest.mark.anyio
async def test_apps_answer_as_prometheus_clients_own_app(
    registry: CollectorRegistry, tracer_provider: TracerProvider, environ: dict[str, str], odd: bool
) -> None:
    """The same headers and bytes, whichever format and escaping the scrape asks for."""
    traces = OtelTraceRecorder(tracer_provider)  # exemplars too
    two_429s_then_success([traces, PrometheusRecorder(registry, trace_ids=traces)])
    if odd:
        registry.register(_OddNames())
    expected_headers, expected = scrape_wsgi(make_wsgi_app(registry), environ)
    wsgi_headers, wsgi = scrape_wsgi(metrics_wsgi_app(registry), environ)
    asgi = [
        (k[5:].replace("_", "-").lower().encode(), v.encode())
        for k, v in environ.items()
        if k.startswith("HTTP_")
    ]
    asgi_headers, asgi_body = await _scrape(
        metrics_asgi_app(registry), asgi, environ.get("QUERY_STRING", "").encode()
    )
    gzipped = expected_headers.get("content-encoding") == "gzip"
    if gzipped:  # each compression stamps its own time
        expected, wsgi, asgi_body = (gzip.decompress(body) for body in (expected, wsgi, asgi_body))
    assert wsgi_headers == {k: v for k, v in expected_headers.items() if k != "content-length"}
    assert {k.decode(): v.decode() for k, v in asgi_headers.items()} == wsgi_headers
    assert wsgi == asgi_body == expected
    assert b"streamtap_retries_total" in expected and (b"job:requests" in expected) is (
        odd and "name" not in str(environ)
    )


@pytest.mark.parametrize(
    ("odd", "escaping"), [(False, "allow-utf-8"), (True, "underscores")], ids=["plain", "odd"]
)
def test_underscore_escaping_is_skipped_only_where_it_changes_nothing(
    registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch, odd: bool, escaping: str
) -> None:
    # prometheus_client escapes each sample name a character at a time under "underscores".
    from prometheus_client.openmetrics import exposition as openmetrics

    used: list[str] = []
    generate = openmetrics.generate_latest

    def spy(registry: Any, escaping: str, version: str) -> bytes:
        used.append(escaping)
        return generate(registry, escaping=escaping, version=version)  # type: ignore[no-any-return]

    monkeypatch.setattr(openmetrics, "generate_latest", spy)
    two_429s_then_success([PrometheusRecorder(registry)])
    if odd:
        registry.register(_OddNames())
    call_wsgi(metrics_wsgi_app(registry), accept=OPENMETRICS)
    assert used == [escaping]


def test_default_exposition_registry_is_the_global_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from prometheus_client import REGISTRY

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    assert exposition_registry() is REGISTRY


def test_multiprocess_totals_with_real_worker_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    spawn = multiprocessing.get_context("spawn")
    plans = [(1, 1, "open"), (2, 1, "half_open"), (3, 2, "closed")]
    ready = [spawn.Event() for _ in plans]
    leave = [spawn.Event() for _ in plans]
    workers = [
        spawn.Process(target=_mp_worker.record, args=(*plan, up, go))
        for plan, up, go in zip(plans, ready, leave, strict=True)
    ]
    for worker in workers:
        worker.start()
    try:
        for up in ready:
            assert up.wait(60), "a worker did not record in time"
        view = exposition_registry()
        assert view.get_sample_value("streamtap_requests_total", {**CHAT, "outcome": "ok"}) == 6
        assert view.get_sample_value("streamtap_retries_total", {**CHAT, "reason": "rate_limited"}) == 12
        assert view.get_sample_value("streamtap_attempts_total", {**CHAT, "result": "error"}) == 12
        assert view.get_sample_value("streamtap_time_to_first_token_seconds_count", CHAT) == 6
        assert view.get_sample_value("streamtap_tokens_total", {**CHAT, "type": "input"}) == 72
        # livesum: the streams still open in every worker
        assert view.get_sample_value("streamtap_active_streams", {"api": "chat_completions"}) == 4
        # livemax: the worst breaker state any worker reports
        circuit = {"upstream": "primary", "model": "gpt-4o-mini"}
        assert view.get_sample_value("streamtap_circuit_state", circuit) == 2

        # The worker with the open breaker and one open stream exits, and no process manager
        # says so (uvicorn restarting a killed worker has no child-exit hook): the view itself
        # forgets its live gauges, and keeps its counts.
        leave[0].set()
        workers[0].join(timeout=60)
        assert workers[0].exitcode == 0
        assert view.get_sample_value("streamtap_active_streams", {"api": "chat_completions"}) == 3
        assert view.get_sample_value("streamtap_circuit_state", circuit) == 1
        assert view.get_sample_value("streamtap_requests_total", {**CHAT, "outcome": "ok"}) == 6

        pid = workers[1].pid
        assert pid is not None
        mark_process_dead(pid)  # as gunicorn's child_exit hook says a worker is gone
        assert view.get_sample_value("streamtap_active_streams", {"api": "chat_completions"}) == 2
        assert view.get_sample_value("streamtap_circuit_state", circuit) == 0
    finally:
        for go in leave:
            go.set()
        for worker in workers:
            worker.join(timeout=60)

    _content_type, body = call_wsgi(metrics_wsgi_app())
    assert b'streamtap_requests_total{api="chat_completions",model="gpt-4o-mini",outcome="ok"} 6.0' in body
    # name[] keeps the samples named, from the workers' files too (a multi-process view's
    # collector names none up front, so prometheus_client's own restriction keeps nothing)
    _headers, only = scrape_wsgi(metrics_wsgi_app(), {"QUERY_STRING": "name[]=streamtap_requests_total"})
    assert b'streamtap_requests_total{api="chat_completions",model="gpt-4o-mini",outcome="ok"} 6.0' in only
    assert b"streamtap_retries_total" not in only


def test_a_dead_workers_gauges_forgotten_twice_at_once_raise_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gunicorn's child_exit hook (`mark_process_dead`) and a worker's scrape (which forgets dead
    workers itself) may remove the same file: the one that came second raised FileNotFoundError,
    which failed the scrape, or stopped the gunicorn master and every worker with it."""
    import os

    from streamtap._exposition import forget_dead_workers

    dead = 2**22 + 12345  # above the kernel's pid_max default: no process has it
    real_remove = os.remove

    def raced(path: str) -> None:
        real_remove(path)  # the other remover wins...
        real_remove(path)  # ...and this one finds the file gone

    monkeypatch.setattr(os, "remove", raced)
    for remove_them in (
        lambda: mark_process_dead(dead, str(tmp_path)),
        lambda: forget_dead_workers(str(tmp_path)),
    ):
        for mode in ("livesum", "livemax"):
            (tmp_path / f"gauge_{mode}_{dead}.db").write_bytes(b"")
        (tmp_path / f"counter_{dead}.db").write_bytes(b"")
        remove_them()
        assert sorted(p.name for p in tmp_path.iterdir()) == [f"counter_{dead}.db"]  # counts stay


def test_serve_metrics_stops_in_a_forked_child_too(registry: CollectorRegistry) -> None:
    """A server started before a fork (gunicorn --preload) is stopped as documented in the
    child: its shutdown() waited for ever for a serving thread the child does not have."""
    import os
    import time

    server = serve_metrics(port=0, registry=registry)
    try:
        pid = os.fork()
        if pid == 0:  # the child: stop "its" server, and say by the exit code how it went
            server.shutdown()
            server.server_close()
            os._exit(0)
        deadline = time.monotonic() + 20
        while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        if done[0] == 0:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("shutdown() in the forked child did not return within 20 s")
        assert os.waitstatus_to_exitcode(done[1]) == 0
        # The parent's server still serves: the child closed only its own copy of the socket.
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics", timeout=10) as answer:
            assert answer.status == 200
    finally:
        server.shutdown()
        server.server_close()


def test_the_live_gauge_modes_forgotten_are_prometheus_clients() -> None:
    from prometheus_client import Gauge

    from streamtap._exposition import _LIVE_MODES

    live = {mode for mode in Gauge._MULTIPROC_MODES if mode.startswith("live")}
    assert set(_LIVE_MODES) == live  # a mode added upstream would leave its files behind
