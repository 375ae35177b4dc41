"""Routing: one parsed HTTP request in, one response plan out (no socket I/O).

Touches only in-memory state (fault selector, response store, request log), so the whole
request → plan mapping is testable without a server.
"""

from __future__ import annotations

import hmac
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .._json import parse_json
from . import _content, _responses
from ._config import FakeConfig, Overrides, parse_overrides
from ._errors import error_body, status_body, status_headers, stream_error_message
from ._faults import CLEAN, FaultSpec
from ._plan import Action, Head, Headers, Reset, Timing, body_fault_plan, json_plan, stream_plan
from ._records import RequestLog, RequestRecord, redact_headers
from ._select import FaultSelector, Selection
from ._store import ResponseStore

_MALFORMED = {
    "chat": b'data: {"id":"chatcmpl-malformed","choices":[{"delta":\n\n',
    "responses": b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","d\n\n',
}
# What precedes the text in each dialect's content events (`garbled_after`).
_TEXT_KEY = {"chat": b'"content":"', "responses": b'"delta":"'}
MODELS = ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-5", "gpt-5-mini", "o4-mini")


@dataclass(frozen=True)
class Request:
    """An HTTP request as parsed off the wire (header names lower-case)."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    body: bytes = b""


class _Reject(Exception):
    """Ends handling early with an error response."""

    def __init__(self, status: int, payload: dict[str, Any]) -> None:
        super().__init__(status)
        self.status = status
        self.payload = payload


def _json_type(value: object) -> str:
    """How OpenAI names a JSON value's type in its invalid_type errors ("a string")."""
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    return "an array" if isinstance(value, list) else "an object"


def _invalid(message: str, param: str | None = None, code: str | None = None) -> _Reject:
    return _Reject(400, error_body(message, "invalid_request_error", code, param))


class App:
    """Maps requests to plans and records every request.

    Args:
        config: the server configuration.
        selector: fault selection (header, queue, incidents).
        store: stored background responses.
        log: where request records go.
        wall_clock: epoch seconds, for `created` fields and HTTP dates.
        clock: monotonic seconds, for record timestamps.
    """

    def __init__(
        self,
        config: FakeConfig,
        selector: FaultSelector,
        store: ResponseStore,
        log: RequestLog,
        *,
        wall_clock: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.selector = selector
        self.store = store
        self.log = log
        self._wall_clock = wall_clock
        self._clock = clock
        self._start = clock()

    def mark_start(self) -> None:
        """Measure record timestamps from now (the server calls this once it listens)."""
        self._start = self._clock()

    def handle(self, request: Request) -> list[Action]:
        """The plan answering `request`; the request is recorded before the plan is returned."""
        url = urlsplit(request.target)
        query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        headers = dict(reversed(request.headers))  # first value wins
        body: dict[str, Any] = {}
        selection = Selection(CLEAN, "")
        try:
            self._check_auth(headers)
            route = self._route(request.method, url.path)
            body = self._parse_body(request)
            overrides = self._overrides(headers)
            selection = self._select(headers, body.get("model"), generation=route in ("chat", "responses"))
            plan = self._dispatch(route, url.path, query, body, selection.fault, overrides)
        except _Reject as reject:
            plan = json_plan(reject.status, reject.payload, self._common_headers())
        model = body.get("model")
        first = plan[0]
        self.log.append(
            RequestRecord(
                method=request.method,
                path=url.path,
                query=url.query,
                model=model if isinstance(model, str) else None,
                stream=bool(body.get("stream")) or query.get("stream") == "true",
                retry_count=headers.get("x-stainless-retry-count"),
                traceparent=headers.get("traceparent"),
                fault=selection.fault.text,
                fault_source=selection.source,
                status=first.status if isinstance(first, Head) else 0,
                headers=redact_headers(request.headers, [self.config.api_key or ""]),
                at_s=self._clock() - self._start,
                request_id=dict(first.headers).get("x-request-id") if isinstance(first, Head) else None,
            )
        )
        return plan

    @staticmethod
    def _parse_body(request: Request) -> dict[str, Any]:
        if not request.body.strip():
            return {}
        try:
            parsed = parse_json(request.body)
        except ValueError:
            raise _invalid("We could not parse the JSON body of your request.") from None
        if not isinstance(parsed, dict):
            raise _invalid("The request body must be a JSON object.")
        return parsed

    @staticmethod
    def _route(method: str, path: str) -> str:
        routes = {("POST", "/v1/chat/completions"): "chat", ("POST", "/v1/responses"): "responses"}
        routes[("GET", "/v1/models")] = "models"
        if (method, path) in routes:
            return routes[(method, path)]
        if method == "GET" and path.startswith("/v1/responses/") and path.count("/") == 3:
            return "retrieve"
        raise _Reject(404, error_body(f"Invalid URL ({method} {path})", "invalid_request_error"))

    def _check_auth(self, headers: dict[str, str]) -> None:
        key = self.config.api_key
        if key is None:
            return
        given = headers.get("authorization", "")
        if not given:
            message = (
                "You didn't provide an API key. You need to provide your API key in an Authorization header."
            )
            raise _Reject(401, error_body(message, "invalid_request_error"))
        if not hmac.compare_digest(given.encode(), f"Bearer {key}".encode()):
            raise _Reject(401, status_body(401))

    @staticmethod
    def _overrides(headers: dict[str, str]) -> Overrides:
        try:
            return parse_overrides(headers)
        except ValueError as err:
            raise _invalid(str(err), code="invalid_value") from None

    def _select(self, headers: dict[str, str], model: object, *, generation: bool) -> Selection:
        try:
            return self.selector.select(
                headers.get("x-fake-fault"), model if isinstance(model, str) else None, generation=generation
            )
        except ValueError as err:
            raise _invalid(str(err), code="invalid_value") from None

    def _common_headers(self) -> Headers:
        return (("x-request-id", f"req_{uuid.uuid4().hex}"), ("openai-processing-ms", "1"))

    def _dispatch(
        self,
        route: str,
        path: str,
        query: dict[str, str],
        body: dict[str, Any],
        fault: FaultSpec,
        o: Overrides,
    ) -> list[Action]:
        headers = self._common_headers()
        if fault.reset:
            return [Reset()]
        if fault.status is not None:
            extra = status_headers(fault, self._wall_clock())
            return json_plan(fault.status, status_body(fault.status, fault.error_code), (*headers, *extra))
        chunks = self.config.chunks if o.chunks is None else o.chunks
        timing = Timing(
            self.config.ttft if o.ttft is None else o.ttft, self.config.gap if o.gap is None else o.gap
        )
        if route == "models":
            created = int(self._wall_clock())
            data = [
                {"id": name, "object": "model", "created": created, "owned_by": "system"} for name in MODELS
            ]
            return json_plan(200, {"object": "list", "data": data}, headers)
        if route == "retrieve":
            # A stored response is already generated: no time to first token unless asked.
            return self._retrieve(
                path.rsplit("/", 1)[1], query, fault, Timing(o.ttft or 0.0, timing.gap), headers
            )
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise _invalid("you must provide a model parameter", param="model")
        stream = body.get("stream")
        if stream is not None and not isinstance(stream, bool):
            raise _invalid(
                f"Invalid type for 'stream': expected a boolean, but got {_json_type(stream)} instead.",
                param="stream",
                code="invalid_type",
            )
        stream = bool(stream)
        if not stream and fault.error_after is not None:
            return json_plan(500, status_body(500, fault.error_code), headers)
        if route == "chat":
            return self._chat(model, body, stream, fault, timing, chunks, headers)
        return self._create_response(model, body, stream, fault, timing, chunks, headers)

    def _chat(
        self,
        model: str,
        body: dict[str, Any],
        stream: bool,
        fault: FaultSpec,
        timing: Timing,
        chunks: int,
        h: Headers,
    ) -> list[Action]:
        messages = body.get("messages")
        if not isinstance(messages, list):
            raise _invalid(
                "Missing required parameter: 'messages'.", "messages", "missing_required_parameter"
            )
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(self._wall_clock())
        if not stream:
            payload = _content.chat_completion(
                completion_id=completion_id, created=created, model=model, prompt=messages, chunks=chunks
            )
            return body_fault_plan(200, payload, fault, timing, chunks, h)
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        frames = _content.chat_frames(
            completion_id=completion_id,
            created=created,
            model=model,
            prompt=messages,
            chunks=chunks,
            include_usage=include_usage,
        )
        code = fault.error_code or "server_error"
        error = {
            "error": {
                "message": stream_error_message(code),
                "type": "server_error",
                "param": None,
                "code": code,
            }
        }
        return stream_plan(
            frames,
            fault,
            timing,
            h,
            lambda _seq: _content.sse_data(error),
            _MALFORMED["chat"],
            _TEXT_KEY["chat"],
        )

    def _create_response(
        self,
        model: str,
        body: dict[str, Any],
        stream: bool,
        fault: FaultSpec,
        timing: Timing,
        chunks: int,
        h: Headers,
    ) -> list[Action]:
        if "input" not in body:
            raise _invalid("Missing required parameter: 'input'.", "input", "missing_required_parameter")
        background = bool(body.get("background"))
        seed = _responses.ResponseSeed(
            response_id=f"resp_{uuid.uuid4().hex}",
            item_id=f"msg_{uuid.uuid4().hex}",
            created_at=int(self._wall_clock()),
            model=model,
            prompt=body["input"],
            chunks=chunks,
            background=background,
        )
        final = _responses.response_object(seed, status="completed")
        frames = _responses.response_frames(seed)
        if background:
            # Stored whole and clean: the "server side" keeps generating when a client drops.
            self.store.put(seed, frames, final)
        if not stream:
            return body_fault_plan(200, final, fault, timing, chunks, h)
        return self._response_stream(seed, frames, fault, timing, h)

    def _retrieve(
        self, response_id: str, query: dict[str, str], fault: FaultSpec, timing: Timing, h: Headers
    ) -> list[Action]:
        stored = self.store.get(response_id)
        if stored is None:
            message = f"Response with id '{response_id}' not found."
            raise _Reject(404, error_body(message, "invalid_request_error"))
        if query.get("stream") != "true":
            return json_plan(200, stored.final, h)
        text = query.get("starting_after")
        try:
            starting_after = None if text is None else int(text)
        except ValueError:
            raise _invalid(f"starting_after={text!r}; accepted: an integer", "starting_after") from None
        if self.config.replay_on_resume:
            starting_after = None
        return self._response_stream(stored.seed, stored.frames_after(starting_after), fault, timing, h)

    @staticmethod
    def _response_stream(
        seed: _responses.ResponseSeed,
        frames: list[_content.Frame],
        fault: FaultSpec,
        timing: Timing,
        h: Headers,
    ) -> list[Action]:
        code = fault.error_code or "server_error"
        message = stream_error_message(code)

        def error_frame(sequence_number: int | None) -> bytes:
            if fault.error_kind == "failed":
                failed = _responses.failed_response(seed, code, message)
                payload = {"type": "response.failed", "response": failed, "sequence_number": sequence_number}
                return _content.sse_event("response.failed", payload)
            if fault.error_kind == "bare":  # a gateway's error, in chat's shape: no type, no event line
                return _content.sse_data(
                    {"error": {"message": message, "type": "server_error", "param": None, "code": code}}
                )
            error = {"type": "error", "code": code, "message": message, "param": None}
            return _content.sse_event("error", {**error, "sequence_number": sequence_number})

        return stream_plan(
            frames, fault, timing, h, error_frame, _MALFORMED["responses"], _TEXT_KEY["responses"]
        )
