"""Timestamps along a streamed request's way to its first content, for proxy_hops.py.

Every request the load generator sends carries a header `x-bench-rid: <n>`; each process notes
when that request passes a point of interest, with `time.perf_counter()` (CLOCK_MONOTONIC on
Linux, one clock for every process of the machine). The hooks wrap private functions of the
proxy, the fake upstream and the load generator: this is a diagnostic, pinned to their code.

Proxy (installed in the proxy's own process, `install_proxy_hooks`):
    read       the proxy's protocol is handed the bytes that hold the request's head
               (`LimitedHttpToolsProtocol.data_received`: the event loop got to the socket)
    parsed     the head is parsed; uvicorn creates the app's task (`on_headers_complete`)
    entry      the ASGI app starts on the request (`Proxy._forward`): the task's first turn
    written    the request's first bytes go to the upstream (`UpstreamConnection.write`)
    content    the upstream's first content event arrives (`UpstreamConnection.data_received`)
    relayed    the proxy sends the client its first body bytes (the ASGI `send`)
Each with `<point>_cpu`, the CPU time of the proxy's thread then (`time.thread_time()`): over a
step, CPU time as long as the wall time means the thread worked throughout (on this request,
or on other streams' callbacks run before it), none of it asleep or preempted.
Fake upstream and load generator (one process, `install_rig_hooks`):
    sent       the load generator writes the request
    received   the fake has read the whole request (`_Connection.read_request`)
    answered   the fake writes the first content event (`_Connection._send`)
    first      the load generator has read the first content event
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from pathlib import Path
from time import perf_counter, thread_time
from typing import Any

HEADER = b"x-bench-rid"
_CONTENT = re.compile(rb'"content":"[^"]')


def install_proxy_hooks(out: Path) -> None:
    """Note the proxy's points of every request, one JSON line per request, in `out`."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from streamtap import _proxy, _upstream_conn
    from streamtap._proxy_protocol import LimitedHttpToolsProtocol

    sink = out.open("a", buffering=1)
    by_task: dict[asyncio.Task[Any], dict[str, Any]] = {}
    arrived: dict[bytes, dict[str, float]] = {}  # by rid: when its head was read and parsed
    forward = _proxy.Proxy._forward
    # The proxy's protocol parses a read itself, a part at a time; uvicorn's parses each head.
    received, headers_complete = LimitedHttpToolsProtocol.data_received, HttpToolsProtocol.on_headers_complete

    def traced_received(self: Any, data: bytes) -> None:
        self.bench_read = perf_counter()
        received(self, data)

    def traced_headers_complete(self: Any) -> None:
        rid = dict(self.headers).get(HEADER)
        if rid is not None:
            arrived[rid] = {"read": self.bench_read, "parsed": perf_counter()}
        headers_complete(self)

    async def traced_forward(self: Any, scope: Any, receive: Any, send: Any) -> None:
        marks: dict[str, Any] = {"entry": perf_counter(), "entry_cpu": thread_time()}
        rid = dict(scope["headers"]).get(HEADER)
        if rid is not None:
            marks.update(arrived.pop(rid, {}))

        async def traced_send(message: Any) -> None:
            if "relayed" not in marks and message["type"] == "http.response.body" and message.get("body"):
                marks["relayed"], marks["relayed_cpu"] = perf_counter(), thread_time()
            await send(message)

        task = asyncio.current_task()
        assert task is not None
        by_task[task] = marks
        try:
            await forward(self, scope, receive, traced_send)
        finally:
            by_task.pop(task, None)
            if rid is not None:
                sink.write(json.dumps({"rid": int(rid), **marks}) + "\n")

    conn = _upstream_conn.UpstreamConnection
    write, data_received = conn.write, conn.data_received

    def traced_write(self: Any, data: bytes, timeout: float | None) -> Any:
        marks = by_task.get(asyncio.current_task())  # type: ignore[arg-type]
        if marks is not None and "written" not in marks:
            marks["written"], marks["written_cpu"] = perf_counter(), thread_time()
            self.bench_marks = marks
        return write(self, data, timeout)

    def traced_data_received(self: Any, data: bytes) -> None:
        marks = getattr(self, "bench_marks", None)
        if marks is not None and _CONTENT.search(data):
            marks["content"], marks["content_cpu"] = perf_counter(), thread_time()
            self.bench_marks = None
        data_received(self, data)

    LimitedHttpToolsProtocol.data_received = traced_received  # type: ignore[method-assign]
    HttpToolsProtocol.on_headers_complete = traced_headers_complete  # type: ignore[method-assign]
    _proxy.Proxy._forward = traced_forward  # type: ignore[method-assign]
    conn.write = traced_write  # type: ignore[method-assign]
    conn.data_received = traced_data_received  # type: ignore[method-assign]


def install_rig_hooks(marks: dict[int, dict[str, Any]], fake_port: int) -> None:
    """Note the load generator's and the fake's points of every request in `marks`, by rid."""
    import _load_client

    from streamtap.fake import _server

    client = _load_client._Connection
    send, take = client.send, client._take
    counter = itertools.count(1)

    def traced_send(self: Any, request: bytes) -> Any:
        rid = next(counter)
        request = request.replace(b"\r\n\r\n", b"\r\n%b: %d\r\n\r\n" % (HEADER, rid), 1)
        stream, waiter = send(self, request)
        proxied = self.transport.get_extra_info("peername")[1] != fake_port
        marks[rid] = {"sent": stream.sent, "proxied": proxied}
        self.bench_rid = rid
        return stream, waiter

    def traced_take(self: Any, events: list[bytes]) -> None:
        stream = self._stream
        before = stream.ttft if stream is not None else None
        take(self, events)
        if stream is not None and before is None and stream.ttft is not None:
            marks[self.bench_rid]["first"] = stream.sent + stream.ttft

    fake = _server._Connection
    read_request, fake_send = fake.read_request, fake._send

    async def traced_read_request(self: Any) -> Any:
        request = await read_request(self)
        rid = dict(request.headers).get(HEADER.decode()) if request is not None else None
        self.bench_rid = int(rid) if rid else None
        if self.bench_rid in marks:
            marks[self.bench_rid]["received"] = perf_counter()
        return request

    def traced_fake_send(self: Any, event: Any) -> None:
        found = marks.get(getattr(self, "bench_rid", None))  # type: ignore[arg-type]
        data = getattr(event, "data", b"")
        if found is not None and "answered" not in found and _CONTENT.search(data):
            found["answered"] = perf_counter()
        fake_send(self, event)

    client.send = traced_send  # type: ignore[method-assign]
    client._take = traced_take  # type: ignore[method-assign]
    fake.read_request = traced_read_request  # type: ignore[method-assign]
    fake._send = traced_fake_send  # type: ignore[method-assign]
