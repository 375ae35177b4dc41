"""An OTLP/HTTP receiver that keeps nothing: the collector a benchmarked proxy exports to.

    python benchmarks/_otlp_sink.py --port PORT --report FILE

Answers every POST to /v1/traces and /v1/metrics with 200, decodes trace requests to count
their spans, and on SIGTERM writes to FILE the requests per path, the spans per traces
request and the bytes received, then exits. Listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


def _spans(body: bytes) -> int:
    request = ExportTraceServiceRequest.FromString(body)
    return sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)


def serve(port: int, report: Path) -> None:
    lock = threading.Lock()
    seen: dict[str, Any] = {"requests": {}, "span_batches": [], "bytes": 0}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            spans = _spans(body) if self.path == "/v1/traces" else None
            with lock:
                seen["requests"][self.path] = seen["requests"].get(self.path, 0) + 1
                seen["bytes"] += len(body)
                if spans is not None:
                    seen["span_batches"].append(spans)
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True

    def stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, stop)
    server.serve_forever()
    with lock:
        report.write_text(json.dumps(seen))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--report", type=Path, required=True)
    args = parser.parse_args()
    serve(args.port, args.report)


if __name__ == "__main__":
    main()
