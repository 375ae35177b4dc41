"""Tiny OTLP receivers on 127.0.0.1, standing in for a collector in tests: OTLP/HTTP (protobuf)
for traces, metrics and logs and, for traces, OTLP/gRPC."""

from __future__ import annotations

import gzip
import threading
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

_GRPC_TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def value(any_value: AnyValue) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [value(v) for v in any_value.array_value.values]
    if kind == "kvlist_value":
        return attributes(any_value.kvlist_value.values)
    return None if kind is None else getattr(any_value, kind)


def attributes(kvs: Any) -> dict[str, Any]:
    return {kv.key: value(kv.value) for kv in kvs}


@dataclass(frozen=True)
class Span:
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope: str


@dataclass(frozen=True)
class Metric:
    name: str
    resource: dict[str, Any]
    scope: str
    points: list[tuple[dict[str, Any], int, float]]  # (attributes, count, sum) of histograms


@dataclass(frozen=True)
class Log:
    event_name: str
    trace_id: str
    span_id: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope: str


@dataclass
class Received:
    spans: list[Span] = field(default_factory=list)
    metrics: list[Metric] = field(default_factory=list)
    logs: list[Log] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    span_batches: list[int] = field(default_factory=list)  # spans per traces request, in order
    trace_bodies: list[bytes] = field(default_factory=list)  # each traces request, decompressed
    lock: threading.Condition = field(default_factory=threading.Condition)


def _spans(request: ExportTraceServiceRequest) -> Iterator[Span]:
    for rs in request.resource_spans:
        resource = attributes(rs.resource.attributes)
        for ss in rs.scope_spans:
            for s in ss.spans:
                yield Span(
                    s.name,
                    s.trace_id.hex(),
                    s.span_id.hex(),
                    s.parent_span_id.hex(),
                    attributes(s.attributes),
                    resource,
                    ss.scope.name,
                )


def _metrics(request: ExportMetricsServiceRequest) -> Iterator[Metric]:
    for rm in request.resource_metrics:
        resource = attributes(rm.resource.attributes)
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                points = [(attributes(p.attributes), p.count, p.sum) for p in m.histogram.data_points]
                yield Metric(m.name, resource, sm.scope.name, points)


def _logs(request: ExportLogsServiceRequest) -> Iterator[Log]:
    for rl in request.resource_logs:
        resource = attributes(rl.resource.attributes)
        for sl in rl.scope_logs:
            for r in sl.log_records:
                yield Log(
                    r.event_name,
                    r.trace_id.hex(),
                    r.span_id.hex(),
                    attributes(r.attributes),
                    resource,
                    sl.scope.name,
                )


def _traces(received: Received, body: bytes) -> bytes:
    request = ExportTraceServiceRequest.FromString(body)
    with received.lock:
        batch = list(_spans(request))
        received.spans.extend(batch)
        received.span_batches.append(len(batch))
        received.trace_bodies.append(body)
    return ExportTraceServiceResponse().SerializeToString()


def _handler(received: Received) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            encoding = self.headers.get("Content-Encoding", "")
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            reply: bytes
            if self.path == "/v1/traces":
                reply = _traces(received, body)
            elif self.path == "/v1/metrics":
                mrequest = ExportMetricsServiceRequest.FromString(body)
                with received.lock:
                    received.metrics.extend(_metrics(mrequest))
                reply = ExportMetricsServiceResponse().SerializeToString()
            elif self.path == "/v1/logs":
                lrequest = ExportLogsServiceRequest.FromString(body)
                with received.lock:
                    received.logs.extend(_logs(lrequest))
                reply = ExportLogsServiceResponse().SerializeToString()
            else:
                reply = b""
            with received.lock:
                received.paths.append(self.path)
                received.lock.notify_all()
            self.send_response(200 if reply or self.path.startswith("/v1/") else 404)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True


@contextmanager
def otlp_receiver() -> Iterator[tuple[str, Received]]:
    """Serve OTLP/HTTP on a free loopback port; yields (`http://127.0.0.1:PORT`, what arrived)."""
    received = Received()
    server = _Server(("127.0.0.1", 0), _handler(received))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@contextmanager
def otlp_grpc_receiver(refuse: int = 0) -> Iterator[tuple[str, Received]]:
    """Serve OTLP/gRPC traces on a free loopback port; yields (`http://127.0.0.1:PORT`, what
    arrived). The first `refuse` exports are answered UNAVAILABLE, which the SDK's exporter
    retries on a new channel; each is recorded in `paths` as "refused"."""
    received = Received()
    refusals = [refuse]

    def export(body: bytes, context: grpc.ServicerContext) -> bytes:
        with received.lock:
            refused = refusals[0] > 0
            refusals[0] -= refused
            received.paths.append("refused" if refused else _GRPC_TRACES)
            if not refused:
                received.lock.notify_all()
        if refused:
            context.abort(grpc.StatusCode.UNAVAILABLE, "refused by the test")
        return _traces(received, body)

    service, method = _GRPC_TRACES.strip("/").split("/")
    handler = grpc.method_handlers_generic_handler(
        service, {method: grpc.unary_unary_rpc_method_handler(export)}
    )
    server = grpc.server(ThreadPoolExecutor(max_workers=2), handlers=[handler])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"http://127.0.0.1:{port}", received
    finally:
        server.stop(None)
