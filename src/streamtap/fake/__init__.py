"""A fake OpenAI upstream with fault injection, for tests, benchmarks and the demo.

A real HTTP/1.1 keep-alive server on loopback (asyncio streams + h11) serving
``POST /v1/chat/completions``, ``POST /v1/responses`` (stream and non-stream; ``background``
responses are stored), ``GET /v1/responses/{id}`` (``?stream=true&starting_after=N`` replays
the stored events with ``sequence_number > N``) and ``GET /v1/models``. Other paths get a 404
with the API's error JSON; with ``api_key`` configured every path needs
``Authorization: Bearer <api_key>`` or gets a 401.

Content is deterministic: a function of (model, messages or input, chunk count), so retries
see byte-identical text (`expected_text`). Per-request overrides: ``x-fake-chunks: 50``,
``x-fake-ttft: 0.2``, ``x-fake-gap: 0.01``.

Fault spec grammar
------------------
``spec := item (";" item)*`` and ``item := key ["=" value]``; an empty spec is clean.
N counts content chunks (chat content deltas / ``response.output_text.delta`` events);
a fault "after N" fires after min(N, chunks) of them (N=0: before the first content).

==========================  ==================================================================
``status=CODE``             error response, the real API's JSON body; CODE in 400 401 403 404
                            409 422 429 500 502 503 504
``retry_after=S``           with status: ``retry-after: S``
``retry_after_ms=MS``       with status: ``retry-after-ms: MS``
``retry_after_date=S``      with status: ``retry-after:`` an HTTP-date S seconds from now
``should_retry=true|false`` with status: ``x-should-retry``
``reset``                   connection reset (RST) before any response byte
``drop_after=N``            abortive drop (RST) after N contents: an unfinished chunked body
``truncate_after=N``        clean, properly terminated body that stops after N contents,
                            without the terminal marker (``[DONE]`` / ``response.completed``)
``stall_first[=S]``         after the headers (and ``response.created``/``in_progress``),
                            send nothing for S seconds (default 60), then continue
``stall_after=N``           with ``stall=S`` (default 60): send nothing for S after N contents
``error_after=N``           an SSE error event after N contents, then the body ends: chat
                            ``data: {"error": {...}}``; responses ``event: error``
``error_kind=event|failed|bare`` with error_after: responses send ``response.failed``, or
                            (bare) chat's ``data: {"error": {...}}`` with no type, as a gateway
                            does, instead
``error_code=CODE``         the error code (default ``server_error``); also with status
``malformed_after=N``       an event whose data is invalid JSON after N contents, then continue
``garbled_after=N``         after N contents, a copy of the next (or last) content event with a
                            byte that is not UTF-8 (0xff) at the start of its text, then
                            continue: it looks like content to anything that does not decode it
``keepalive=K``             K ``: keep-alive`` comments spread over the time to first token
``times=N``                 header: only the first N requests with this exact header value get
                            the fault, later ones are clean; queue: the spec serves N requests
``model=NAME``              the spec applies only to requests for model NAME
==========================  ==================================================================

At most one of status, reset, drop_after, truncate_after, error_after per spec. Stalls end
early when the client disconnects. Non-streamed requests: ttft, gaps and stall_first delay
the headers; drop_after sends half the body then resets; truncate_after sends half then
closes; malformed_after sends invalid JSON; error_after becomes a 500; garbled_after only
affects streams.

Selection, first match wins: (1) the ``x-fake-fault`` request header; (2) the queue
(`FakeUpstream.enqueue`), one spec per generation request; (3) `Incident` windows relative to
server start, drawn with a seeded RNG. Only header faults affect model listing and response
retrieval. Invalid specs raise ValueError naming the key and the accepted values (a header
spec gets a 400).

Example::

    with FakeUpstream(FakeConfig(chunks=20)) as fake:
        fake.enqueue("status=429;retry_after=0", "")
        client = openai.OpenAI(base_url=fake.base_url, api_key="sk-test")
"""

from __future__ import annotations

from ._config import FakeConfig
from ._content import expected_text
from ._faults import FaultSpec, parse_fault
from ._records import RequestRecord
from ._select import Incident, parse_incident
from ._upstream import FakeUpstream

__all__ = [
    "FakeConfig",
    "FakeUpstream",
    "FaultSpec",
    "Incident",
    "RequestRecord",
    "expected_text",
    "parse_fault",
    "parse_incident",
]
