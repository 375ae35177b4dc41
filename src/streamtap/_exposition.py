"""Serving the Prometheus metrics: an HTTP server, WSGI and ASGI apps, multi-process mode.

With PROMETHEUS_MULTIPROC_DIR set (gunicorn/uvicorn workers), every worker writes its values to
files in that directory and whoever serves `/metrics` must read them all: these helpers then
expose a fresh registry holding a MultiProcessCollector instead of the in-process REGISTRY.
All servers and apps negotiate OpenMetrics (where exemplars live) from the Accept header.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import os
import re
import socket
import threading
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any, Final
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import anyio.to_thread
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client import multiprocess as _multiprocess
from prometheus_client.exposition import ThreadingWSGIServer, choose_encoder, gzip_accepted
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import exposition as openmetrics

from ._bind_errors import bind_failure
from ._prom_metrics import check_registry

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# zlib's fastest level, not prometheus_client's 9: for 20 models' OpenMetrics (490 kB) 1.05 ms of
# CPU and 40 kB against 12.4 ms and 29 kB (benchmarks/exposition.py; docs/benchmarks.md,
# "Writing the exposition").
GZIP_LEVEL: Final = 1


def multiprocess_enabled() -> bool:
    """True when prometheus_client runs in multi-process mode (PROMETHEUS_MULTIPROC_DIR set)."""
    return bool(os.environ.get(MULTIPROC_ENV))


def exposition_registry(
    registry: CollectorRegistry | None = None, *, name: str = "registry"
) -> CollectorRegistry:
    """The registry to expose: `registry` if given, else a multi-process view or REGISTRY.

    Args:
        registry: an explicit registry wins over everything.
        name: what the error for a `registry` of another type calls it.
    """
    if registry is not None:
        # Checked now: a wrong one would fail each scrape, long after the app was built.
        check_registry(name, registry)
        return registry
    if multiprocess_enabled():
        view = CollectorRegistry()
        _LiveWorkersCollector(view)  # type: ignore[no-untyped-call]
        return view
    return REGISTRY


class _LiveWorkersCollector(_multiprocess.MultiProcessCollector):
    """The workers' files, after forgetting the live gauges of workers that are gone.

    A process manager with a child-exit hook calls `mark_process_dead` (gunicorn's
    `child_exit`); one without (uvicorn restarting a worker that crashed or was killed) never
    does, and the dead worker's open streams and open breaker would be counted for ever.
    """

    def collect(self) -> Iterable[Metric]:
        forget_dead_workers(self._path)
        return super().collect()  # type: ignore[no-untyped-call,no-any-return]


_LIVE_FILE = re.compile(r"gauge_live[a-z]*_(\d+)\.db")


def forget_dead_workers(path: str) -> None:
    """`mark_process_dead` for every worker whose live-gauge files are in `path` and whose
    process is gone (a process another user owns is alive)."""
    try:
        names = os.listdir(path)
    except OSError:
        return  # the collector reports a missing directory itself
    pids = {int(match[1]) for match in map(_LIVE_FILE.fullmatch, names) if match}
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            _forget_live_gauges(pid, path)
        except OSError:
            pass  # alive (PermissionError: another user's), or not ours to judge


def serve_metrics(
    port: int = 9464, addr: str = "127.0.0.1", registry: CollectorRegistry | None = None
) -> WSGIServer:
    """Serve the metrics over HTTP from a daemon thread and return the server.

    Stop it with `server.shutdown(); server.server_close()`. `port=0` picks a free port
    (read it from `server.server_port`).

    Args:
        port: TCP port (9464 is the conventional Prometheus exporter port for OpenTelemetry).
        addr: interface to bind; loopback by default so nothing is exposed by accident.
        registry: what to serve (default: the multi-process view or the global REGISTRY).

    Raises:
        ValueError: a port or addr of the wrong type or out of range.
        OSError: the port is taken or the address is not this machine's (the message names which).
    """
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ValueError(f"serve_metrics port must be an integer 0..65535 (0: a free one), got {port!r}")
    if not isinstance(addr, str) or not addr:
        raise ValueError(f"serve_metrics addr must be an interface address such as '127.0.0.1', got {addr!r}")
    if registry is not None and not isinstance(registry, CollectorRegistry):
        raise TypeError(f"serve_metrics registry must be a CollectorRegistry or None, got {registry!r}")
    try:
        server = _serve(addr, port, metrics_wsgi_app(exposition_registry(registry)))
    except OSError as error:
        # The socket's own message names neither argument ("[Errno 98] Address already in
        # use"); the same type and errno are kept for callers that branch on them.
        problem = bind_failure(
            error,
            host_flag="serve_metrics addr",
            host=addr,
            port_flag="serve_metrics port",
            port=port,
            free_port="port=0",
        )
        raise type(error)(error.errno, problem) from error
    return server


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Log no scrape."""


def _serve(addr: str, port: int, app: Callable[..., Iterable[bytes]]) -> WSGIServer:
    """Serve `app` from a daemon thread, as prometheus_client's `start_http_server` serves its
    own: a thread per request, IPv6 addresses too, no request logs."""
    family, _, _, _, sockaddr = socket.getaddrinfo(
        addr, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]

    class Server(ThreadingWSGIServer):
        address_family = family
        owner = os.getpid()

        def shutdown(self) -> None:
            # A forked child (gunicorn --preload, multiprocessing) has this object but not the
            # thread serving it: the stdlib's shutdown() waited for that thread for ever. Its
            # server_close() still closes the child's copy of the socket.
            if os.getpid() == self.owner:
                super().shutdown()

    server: WSGIServer = make_server(str(sockaddr[0]), port, app, Server, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, name="streamtap-metrics", daemon=True).start()
    return server


def metrics_wsgi_app(registry: CollectorRegistry | None = None) -> Callable[..., Iterable[bytes]]:
    """A WSGI app serving the metrics (mount it at /metrics).

    Args:
        registry: what to serve (default: the multi-process view or the global REGISTRY).
    """
    served = exposition_registry(registry, name="metrics_wsgi_app registry")

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        headers, body = _exposition(
            served,
            environ.get("HTTP_ACCEPT", ""),
            environ.get("HTTP_ACCEPT_ENCODING", ""),
            environ.get("QUERY_STRING", ""),
        )
        start_response("200 OK", [(name.decode(), value.decode()) for name, value in headers])
        return [body]

    return app


def metrics_asgi_app(registry: CollectorRegistry | None = None) -> Callable[..., Awaitable[None]]:
    """An ASGI app serving the metrics (mount it at /metrics).

    The exposition is written in a worker thread: it takes about 1 ms of CPU per (api, model)
    served (43 ms for 20 models of both APIs in OpenMetrics), and in the event loop every
    request would wait that long at each scrape; from a thread, the loop keeps taking turns at
    the GIL.

    Args:
        registry: what to serve (default: the multi-process view or the global REGISTRY).
    """
    served = exposition_registry(registry, name="metrics_asgi_app registry")

    async def app(
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
        send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ) -> None:
        headers, body = await anyio.to_thread.run_sync(
            _exposition,
            served,
            _header(scope, b"accept"),
            _header(scope, b"accept-encoding"),
            scope.get("query_string", b"").decode("latin-1"),
        )
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def _exposition(
    registry: CollectorRegistry, accept: str, accept_encoding: str, query: str
) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The response headers and body for a scrape, as prometheus_client's own apps write them:
    the format the Accept header asks for (OpenMetrics carries the exemplars), `name[]`
    restricting the metrics, gzip when accepted."""
    try:
        encoder, content_type = choose_encoder(accept)
    except (TypeError, ValueError):  # its parser raises on a version that is no number ("version=bad")
        encoder, content_type = choose_encoder("")  # the text format, as for no Accept header
    if (
        isinstance(encoder, functools.partial)
        and encoder.func is openmetrics.generate_latest
        and encoder.keywords.get("escaping") == openmetrics.UNDERSCORES
    ):
        encoder = functools.partial(
            _openmetrics_underscores, version=encoder.keywords.get("version", "1.0.0")
        )
    names = parse_qs(query).get("name[]")
    body = encoder(_restricted(registry, names) if names else registry)
    headers = [(b"content-type", content_type.encode())]
    if gzip_accepted(accept_encoding):
        body = gzip.compress(body, compresslevel=GZIP_LEVEL)
        headers.append((b"content-encoding", b"gzip"))
    return headers, body


_plain = functools.lru_cache(maxsize=4096)(re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*").fullmatch)


class _Collected:
    """Metrics already collected, for an encoder that asks a registry to `collect()`."""

    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> list[Metric]:
        return self.metrics


def _restricted(registry: CollectorRegistry, names: list[str]) -> CollectorRegistry:
    """The samples of `registry` named in `names` (`name[]`), as prometheus_client's
    `restricted_registry` keeps them. Filtered after collecting, not by the collectors' names:
    a multi-process view's collector has none to give (`describe`), so that would keep nothing."""
    wanted = set(names)
    kept: list[Metric] = []
    for metric in registry.collect():
        samples = [sample for sample in metric.samples if sample.name in wanted]
        if samples:
            restricted = Metric(metric.name, metric.documentation, metric.type, metric.unit)
            restricted.samples = samples
            kept.append(restricted)
    return _Collected(kept)  # type: ignore[return-value]  # an encoder only calls collect()


def _openmetrics_underscores(registry: CollectorRegistry, version: str) -> bytes:
    """OpenMetrics with underscore escaping of names, byte for byte as prometheus_client writes it.

    prometheus_client escapes each sample's name one character at a time, about a third of the
    CPU of writing it (docs/benchmarks.md, "Writing the exposition"). When every metric, sample and
    label name is made of letters, digits and underscores only, that escaping changes nothing
    and the allow-utf-8 escaping writes the same bytes without the loop; otherwise
    prometheus_client's escaping runs as before.
    """
    metrics = list(registry.collect())
    names = {m.name for m in metrics}
    for metric in metrics:
        for sample in metric.samples:
            names.add(sample.name)
            names.update(sample.labels)
    plain = all(_plain(name) for name in names)
    escaping = openmetrics.ALLOWUTF8 if plain else openmetrics.UNDERSCORES
    written: bytes = openmetrics.generate_latest(  # type: ignore[no-untyped-call]
        _Collected(metrics), escaping=escaping, version=version
    )
    return written


def _header(scope: MutableMapping[str, Any], name: bytes) -> str:
    """Every value of a request header, joined as one (a list of values either way)."""
    return ",".join(value.decode("latin-1") for key, value in scope.get("headers", []) if key.lower() == name)


def mark_process_dead(pid: int, path: str | None = None) -> None:
    """Forget a dead worker's live gauges (active streams, circuit state); call it from the
    process manager's child-exit hook (gunicorn: `child_exit`).

    Args:
        pid: the dead worker's process id.
        path: the multi-process directory (default: PROMETHEUS_MULTIPROC_DIR).

    Raises:
        ValueError: a pid that is no process id, or no directory (neither path nor the variable).
    """
    if not isinstance(pid, int) or isinstance(pid, bool) or pid < 1:
        raise ValueError(f"mark_process_dead pid must be a process id (an integer >= 1), got {pid!r}")
    if path is None:
        path = os.environ.get(MULTIPROC_ENV) or None
        if path is None:  # prometheus_client would fail on os.path.join(None, ...)
            raise ValueError(
                f"mark_process_dead needs the multi-process directory: set {MULTIPROC_ENV} "
                "(as for the workers) or pass path="
            )
    elif not isinstance(path, str) or not path:
        raise ValueError(
            f"mark_process_dead path must be a directory path or None ({MULTIPROC_ENV}), got {path!r}"
        )
    _forget_live_gauges(pid, path)


# The gauge modes whose values die with their process, as prometheus_client names their files.
_LIVE_MODES = ("liveall", "livemax", "livemin", "livemostrecent", "livesum")


def _forget_live_gauges(pid: int, path: str) -> None:
    """prometheus_client's `mark_process_dead` without its race: it lists a dead worker's files,
    then removes each, and a scrape's `forget_dead_workers` and the master's child-exit hook may
    both remove the same file. The loser raised FileNotFoundError: the scrape failed, and gunicorn,
    which stops on any error in `child_exit`, stopped every worker."""
    for mode in _LIVE_MODES:
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(path, f"gauge_{mode}_{pid}.db"))
