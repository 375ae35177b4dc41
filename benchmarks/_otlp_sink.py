"""An OTLP receiver that keeps nothing: the collector a benchmarked proxy exports to.

    python benchmarks/_otlp_sink.py --port PORT --report FILE [--grpc]

Over OTLP/HTTP (or, with `--grpc`, OTLP/gRPC) answers every export of traces and metrics at
once, decodes trace requests to count their spans, and on SIGTERM writes to FILE the requests
per path (/v1/traces, /v1/metrics), the spans per traces request and the bytes received, then
exits. Listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


def _spans(body: bytes) -> int:
    request = ExportTraceServiceRequest.FromString(body)
    return sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)


_GRPC_PATHS = {
    "/v1/traces": "opentelemetry.proto.collector.trace.v1.TraceService",
    "/v1/metrics": "opentelemetry.proto.collector.metrics.v1.MetricsService",
}


class _Seen:
    """What arrived, counted from the servers' threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.data: dict[str, Any] = {"requests": {}, "span_batches": [], "bytes": 0}

    def add(self, path: str, body: bytes) -> None:
        spans = _spans(body) if path == "/v1/traces" else None
        with self.lock:
            self.data["requests"][path] = self.data["requests"].get(path, 0) + 1
            self.data["bytes"] += len(body)
            if spans is not None:
                self.data["span_batches"].append(spans)

    def write(self, report: Path) -> None:
        with self.lock:
            report.write_text(json.dumps(self.data))


def _until_sigterm() -> None:
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stopped.set())
    while not stopped.wait(0.2):
        pass


def grpc_server(port: int, on_export: Callable[[str, bytes], None]) -> tuple[Any, int]:
    """A started OTLP/gRPC server on 127.0.0.1:`port` (0: a free one) that answers every export of
    traces and metrics at once, after `on_export(path, body)`; the server and its port."""
    import grpc  # type: ignore[import-untyped]

    def handler(path: str) -> Any:
        def export(body: bytes, context: Any) -> bytes:
            on_export(path, body)
            return b""  # an empty Export*ServiceResponse

        return grpc.unary_unary_rpc_method_handler(export)

    server = grpc.server(
        ThreadPoolExecutor(max_workers=4),
        handlers=[
            grpc.method_handlers_generic_handler(service, {"Export": handler(path)})
            for path, service in _GRPC_PATHS.items()
        ],
    )
    port = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server, port


def serve_grpc(port: int, report: Path) -> None:
    seen = _Seen()
    server, _ = grpc_server(port, seen.add)
    _until_sigterm()
    server.stop(None)
    seen.write(report)


def serve(port: int, report: Path) -> None:
    seen = _Seen()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            seen.add(self.path, self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _until_sigterm()
    server.shutdown()
    seen.write(report)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--report", type=Path, required=True)
    parser.add_argument("--grpc", action="store_true", help="OTLP/gRPC instead of OTLP/HTTP")
    args = parser.parse_args()
    (serve_grpc if args.grpc else serve)(args.port, args.report)


if __name__ == "__main__":
    main()
