"""Whole answers: a non-streaming call's body, or one JSON body answered to a stream's request.

What the drivers make of an answer read whole: the caller's content and its parsed JSON, or
why it is no answer (a body that broke, is too large, is no JSON, reports an error, or is a web
page), and what a caller who asked for no stream gets when such an error ends the call.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import httpx2

from ._call import Call
from ._driver import callers_read_timeout, error_response
from ._errors import CONNECTION_ERRORS, Failure, classify_error_event, classify_exception, failure
from ._json import parse_json
from ._steps import ErrorResponse, Send

MAX_BODY = 64 * 1024 * 1024  # a non-streaming answer larger than this is a bad response
# What is kept of an error status's body: an error object is a few hundred bytes, and one that
# decompresses a thousandfold (or a gateway's page) must not fill the caller's memory, or a
# proxy's shared by every call.
MAX_ERROR_BODY = 1024 * 1024


def body_failure(error: Exception, blame_caller: bool = False) -> Failure:
    """Why a non-streaming answer failed after its headers: its body broke, timed out, or was
    too large (`phase` first_token: no answer yet, and the headers did arrive). `blame_caller`
    (`callers_read_timeout`) makes it breaker-neutral."""
    if isinstance(error, httpx2.TimeoutException):
        timed_out = failure(
            "timeout",
            "first_token",
            f"the answer's body timed out ({type(error).__name__})",
            counts_for_breaker=not blame_caller,
        )
        # The caller's own read timeout: raised as `StreamTimedOut`, an `openai.APITimeoutError`,
        # as the plain SDK raises it for the same body.
        return dataclasses.replace(timed_out, callers_timeout=blame_caller)
    if isinstance(error, CONNECTION_ERRORS):
        return classify_exception(error, phase="first_token")
    return failure("bad_response", "first_token", str(error))


def answer_failure(error: Exception, call: Call, send: Send, request: httpx2.Request, now: float) -> Failure:
    """Why reading a whole answer's body failed: the call's total_timeout (its reads bounded by
    `CallDeadline`), else `body_failure`, breaker-neutral when the caller's own read timeout ran
    out (`callers_read_timeout`)."""
    if (
        call.deadline is not None
        and now >= call.deadline - 1e-3
        and isinstance(error, httpx2.TimeoutException)
    ):
        return failure("timeout", "first_token", "the call's total_timeout ran out")
    return body_failure(error, callers_read_timeout(error, call, send, request))


def web_page(response: httpx2.Response) -> Failure | None:
    """Why a 2xx answer that is a web page (text/html) is no answer, else None.

    A base URL that reaches a website (a front end's dev server that serves its page on every
    path), a login page or a captive portal, not an OpenAI-compatible API: the plain SDK reads
    such a page as an empty stream. Not retried (the same URL gives the same page); a fallback
    to another upstream may still serve."""
    if _media_type(response) != "text/html":
        return None
    return failure(
        "bad_response",
        "first_token",
        "the upstream answered with a web page (text/html), not the API's JSON or event stream: "
        "is the base URL an OpenAI-compatible API?",
        retryable=False,
    )


def labelled_whole(send: Send, response: httpx2.Response) -> bool:
    """Whether a stream's answer is labelled one JSON body, as an OpenAI-compatible server that
    ignores `stream` sends it. The plain SDK reads such an answer as an empty stream; it is
    served as a non-streaming fallback's is, unless its first bytes are an event's
    (`reads_as_events`): some gateways label an event stream so, and the SDK reads it as one.
    (Not for a resumed stream: its caller has the answer's start already.)"""
    return _media_type(response) == "application/json" and not send.resume


# How an event stream's first line can start (a field, or ":" for a comment), and how much of
# a body's start may be spent telling it from JSON (blank lines before either).
_EVENT_FIELDS = (b"data:", b"event:", b"id:", b"retry:", b":")
_MAX_HEAD = 64 * 1024


def reads_as_events(head: bytes, *, whole: bool = False) -> bool | None:
    """Whether a body labelled `application/json`, answered to a stream's request, is in fact an
    event stream (some gateways label one so; the plain SDK reads it as a stream all the same):
    True when its first line starts with an event field or a comment, False when it starts as
    anything else (one JSON answer, or something no stream reads), None while `head`, the
    body's first bytes, is too short to tell. `whole`: `head` is the whole body."""
    start = head.lstrip(b"\r\n")  # blank lines; the SDK reads no field after spaces
    if start.startswith(_EVENT_FIELDS):
        return True
    if whole or len(head) > _MAX_HEAD:
        return False
    if not start or any(field.startswith(start) for field in _EVENT_FIELDS):
        return None
    return False


def _media_type(response: httpx2.Response) -> str:
    """The response's content type without its parameters, lowercased ("" when it has none)."""
    return response.headers.get("content-type", "").partition(";")[0].strip().lower()


def body_answer(call: Call, send: Send, response: httpx2.Response, raw: bytes) -> tuple[bytes, Any] | Failure:
    """A complete non-streaming answer: (what the caller gets, parsed JSON), or why it is bad."""
    try:
        body = parse_json(raw)
    except (ValueError, UnicodeDecodeError) as error:
        return failure("bad_response", "first_token", f"the answer is not valid JSON ({error})")
    if not isinstance(body, dict):
        return failure("bad_response", "first_token", "the answer is not a JSON object")
    stream = call.primary.stream  # a non-streaming fallback serves a streaming caller
    if _reports_error(body):
        # An error answered whole is the upstream's error, as the same in an event would be:
        # retried if its code is transient, counted as an error, never a stream with nothing
        # in it. A caller that asked for no stream gets the last such body as it came
        # (`whole_error`), as from the SDK.
        return classify_error_event(body, "first_token")
    unfinished = call.dialect.unfinished(body) if stream else None
    if unfinished is not None:
        return failure("bad_response", "first_token", unfinished)
    call.dialect.body_facts(body, call.facts)
    return (call.dialect.from_json(body, call.primary.body) if stream else raw), body


def whole_error(call: Call, response: httpx2.Response, raw: bytes, failed: Failure) -> ErrorResponse | None:
    """What a caller that asked for no stream gets if `failed`, an error the upstream answered
    whole (`body_answer`), ends the call: the body as it came, which the SDK reads as an
    answer (a failed response, a completion with no choices). A stream's caller gets the typed
    error, as does any caller whose answer does not parse."""
    if call.primary.stream or failed.error_type != "upstream_error_event":
        return None
    return error_response(response, raw)


def _reports_error(body: Mapping[str, Any]) -> bool:
    """A bare `{"error": {...}}` (or `{"error": "..."}`), or a response whose status is failed."""
    error = body.get("error")
    return (isinstance(error, (Mapping, str)) and bool(error)) or body.get("status") == "failed"
