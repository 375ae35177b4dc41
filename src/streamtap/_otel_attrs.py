"""Pure attribute builders for the OpenTelemetry spans and events: GenAI and HTTP client
conventions.

Nothing here reads headers, and URLs lose their query string, fragment and user info: API keys
and Authorization values must never reach a span.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from ._events import CallFinished, CallStarted
from ._taxonomy import Api
from ._utf8 import valid_text

PROVIDER: Final = "openai"
MAX_MODEL_CHARS: Final = 256

# Responses is OpenAI's successor of chat completions: a conversation in, generated messages
# out, which is what the predefined `chat` operation describes. The conventions define no
# separate name for it; they distinguish the two APIs with `openai.api.type` instead.
_OPERATION: Final[dict[str, str]] = {"chat_completions": "chat", "responses": "chat", "other": "chat"}

# gen_ai.output.type's well-known values for OpenAI's format types.
_OUTPUT_TYPES: Final[dict[str, str]] = {"json_object": "json", "json_schema": "json", "text": "text"}

_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_FLOAT_INT: Final = 2**1023  # an integer this size still converts to a finite float

AttributeValue = str | bool | int | float | list[str] | list[int] | list[float] | list[bool]


def check_provider(name: str, provider: object, method: str) -> None:
    """A TypeError naming `name` unless `provider` is None or an OpenTelemetry provider."""
    if provider is not None and not callable(getattr(provider, method, None)):
        kind = {"get_tracer": "TracerProvider", "get_meter": "MeterProvider"}.get(method, "LoggerProvider")
        raise TypeError(
            f"{name} must be an OpenTelemetry {kind} or None (None: the global one), got {provider!r}"
        )


def operation_name(api: Api | str) -> str:
    """gen_ai.operation.name for an API."""
    return _OPERATION.get(api, "chat")


def request_model(model: object) -> str:
    """The requested model as the conventions want it: exact, only stripped and bounded."""
    return valid_text(model.strip()[:MAX_MODEL_CHARS]) if isinstance(model, str) else ""


def call_span_name(api: Api | str, model: object) -> str:
    model_name = request_model(model)
    return f"{operation_name(api)} {model_name}" if model_name else operation_name(api)


@functools.lru_cache(maxsize=256)
def safe_url(url: str) -> tuple[str, str | None, int | None]:
    """(url.full without query/fragment/userinfo, host, port) of an attempt URL.

    Cached: a client sends its attempts to a handful of URLs, and the split costs more than
    the rest of an attempt span's attributes.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port = parts.port
    except ValueError:
        return "", None, None
    netloc = host or ""
    if host and ":" in host:
        netloc = f"[{host}]"
    if port is not None:
        netloc = f"{netloc}:{port}"
    if port is None and host:
        port = {"https": 443, "http": 80}.get(parts.scheme)
    return urlunsplit((parts.scheme, netloc, parts.path, "", "")), host, port


def _number(value: object) -> float | None:
    """A finite JSON number as a float, else None (an integer past a float's range too)."""
    if type(value) is int:
        return float(value) if -_FLOAT_INT <= value <= _FLOAT_INT else None
    return value if type(value) is float and math.isfinite(value) else None


def _integer(value: object) -> int | None:
    """A JSON integer OTLP can carry (int64), else None."""
    return value if type(value) is int and _INT64_MIN <= value <= _INT64_MAX else None


def call_attributes(event: CallStarted) -> dict[str, AttributeValue]:
    """Attributes known when the call starts (sampling decisions may use them)."""
    api, request = event.api, event.request
    attrs: dict[str, AttributeValue] = {
        "gen_ai.operation.name": operation_name(api),
        "gen_ai.provider.name": PROVIDER,
        "gen_ai.request.model": request_model(event.model),
    }
    if api in ("chat_completions", "responses"):
        attrs["openai.api.type"] = api
    if event.stream:
        attrs["gen_ai.request.stream"] = True  # the conventions: set if and only if streaming
    if event.server_address:
        attrs["server.address"] = event.server_address
    if event.server_port is not None:
        attrs["server.port"] = event.server_port
    for key, name in (
        ("temperature", "gen_ai.request.temperature"),
        ("top_p", "gen_ai.request.top_p"),
        ("frequency_penalty", "gen_ai.request.frequency_penalty"),
        ("presence_penalty", "gen_ai.request.presence_penalty"),
    ):
        number = _number(request.get(key))
        if number is not None:
            attrs[name] = number
    for key in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        limit = _integer(request.get(key))
        if limit is not None:
            attrs["gen_ai.request.max_tokens"] = limit
            break
    seed = _integer(request.get("seed"))
    if seed is not None:
        attrs["gen_ai.request.seed"] = seed
    choices = _integer(request.get("n"))
    if choices is not None and choices != 1:
        attrs["gen_ai.request.choice.count"] = choices
    stop = request.get("stop")
    if isinstance(stop, str):
        attrs["gen_ai.request.stop_sequences"] = [valid_text(stop)]
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        attrs["gen_ai.request.stop_sequences"] = [valid_text(s) for s in stop]
    tier = request.get("service_tier")
    if isinstance(tier, str) and tier != "auto":
        attrs["openai.request.service_tier"] = valid_text(tier)
    output_type = _output_type(request)
    if output_type is not None:
        attrs["gen_ai.output.type"] = valid_text(output_type)
    conversation = request.get("conversation")
    if isinstance(conversation, Mapping):
        conversation = conversation.get("id")
    if isinstance(conversation, str) and conversation:
        attrs["gen_ai.conversation.id"] = valid_text(conversation)
    return attrs


def _output_type(request: Mapping[str, Any]) -> str | None:
    """gen_ai.output.type of the output format the request asks for, if it names one.

    Chat completions say it in `response_format`, responses in `text.format`; both JSON kinds
    (`json_object`, `json_schema`) are the conventions' `json`, other types keep their name.
    """
    fmt = request.get("response_format")
    if fmt is None:
        text = request.get("text")
        fmt = text.get("format") if isinstance(text, Mapping) else None
    kind = fmt.get("type") if isinstance(fmt, Mapping) else fmt
    if not isinstance(kind, str) or not kind:
        return None
    return _OUTPUT_TYPES.get(kind, kind)


def finish_attributes(event: CallFinished) -> dict[str, AttributeValue]:
    """Attributes known when the call ends: the answer's, the outcome's and streamtap's own."""
    attrs: dict[str, AttributeValue] = {
        "streamtap.attempts": event.attempts,
        "streamtap.outcome": event.outcome,
    }
    if event.outcome == "error":
        attrs["error.type"] = event.error_type or "_OTHER"
    if event.fallback is not None:
        attrs["streamtap.fallback"] = event.fallback
    if event.response_model:
        attrs["gen_ai.response.model"] = request_model(event.response_model)
    if event.response_id:
        attrs["gen_ai.response.id"] = valid_text(event.response_id)
    if event.finish_reasons:
        attrs["gen_ai.response.finish_reasons"] = [valid_text(str(r)) for r in event.finish_reasons]
    if event.input_tokens is not None:
        attrs["gen_ai.usage.input_tokens"] = event.input_tokens
    if event.output_tokens is not None:
        attrs["gen_ai.usage.output_tokens"] = event.output_tokens
    if event.cached_input_tokens is not None:
        attrs["gen_ai.usage.cache_read.input_tokens"] = event.cached_input_tokens
    if event.reasoning_output_tokens is not None:
        attrs["gen_ai.usage.reasoning.output_tokens"] = event.reasoning_output_tokens
    if event.service_tier is not None:
        attrs["openai.response.service_tier"] = valid_text(event.service_tier)
    if event.system_fingerprint is not None:
        attrs["openai.response.system_fingerprint"] = valid_text(event.system_fingerprint)
    if event.time_to_first_token is not None:
        attrs["gen_ai.response.time_to_first_chunk"] = event.time_to_first_token
    if event.max_chunk_gap is not None:
        attrs["streamtap.max_chunk_gap"] = event.max_chunk_gap
    if event.chunks:
        attrs["streamtap.chunks"] = event.chunks
    return attrs


def attempt_attributes(
    *, method: str, url: str, attempt: int, model: str, call_model: str, fallback: str | None
) -> dict[str, AttributeValue]:
    """HTTP client span attributes of one upstream attempt."""
    full, host, port = safe_url(url)
    attrs: dict[str, AttributeValue] = {"http.request.method": method.upper() or "_OTHER"}
    if full:
        attrs["url.full"] = full
    if host:
        attrs["server.address"] = host
    if port is not None:
        attrs["server.port"] = port
    if attempt > 0:
        attrs["http.request.resend_count"] = attempt
    if model and model != call_model:
        attrs["gen_ai.request.model"] = request_model(model)
    if fallback:
        attrs["streamtap.fallback"] = fallback
    return attrs
