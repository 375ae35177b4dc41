"""Text and JSON from decoded JSON, made fit for UTF-8 (`_utf8`), and the numbers telemetry keeps."""

from __future__ import annotations

import json
import math

import pytest

from streamtap._dialect import MAX_COUNT, token_count
from streamtap._events import CallStarted
from streamtap._otel_attrs import call_attributes
from streamtap._utf8 import json_bytes, valid_text

LONE = ["\ud800", "a\udc00b", "\ud83d", "x\udfff\ud800y", "é\ud800"]


@pytest.mark.parametrize("text", ["", "plain", "é 漢字 😀", "\u0000\n"])
def test_text_that_encodes_is_returned_as_it_is(text: str) -> None:
    assert valid_text(text) is text


@pytest.mark.parametrize("text", LONE)
def test_a_lone_surrogate_becomes_the_replacement_character(text: str) -> None:
    cleaned = valid_text(text)
    assert cleaned.encode().decode() == cleaned
    assert len(cleaned) == len(text)
    assert cleaned.count("\ufffd") == sum(0xD800 <= ord(c) <= 0xDFFF for c in text)


@pytest.mark.parametrize("value", [{"a": "é 😀"}, ["漢字", 1, None], "plain"])
def test_json_bytes_keep_text_as_it_is(value: object) -> None:
    assert json_bytes(value) == json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


@pytest.mark.parametrize("text", LONE)
def test_json_bytes_escape_a_lone_surrogate_and_say_exactly_what_came(text: str) -> None:
    value = {"messages": [{"content": text}], "model": "é"}
    data = json_bytes(value)
    assert data.isascii()
    assert json.loads(data) == value


COUNTS = [(0, 0), (12, 12), (MAX_COUNT, MAX_COUNT), (MAX_COUNT + 1, None), (-1, None), (True, None),
          (1.0, None), ("3", None), (None, None), (10**400, None)]  # fmt: skip


@pytest.mark.parametrize(("value", "count"), COUNTS)
def test_a_token_count_is_a_json_integer_an_int64_can_hold(value: object, count: int | None) -> None:
    assert token_count(value) == count


def test_request_numbers_past_what_otlp_carries_are_left_out() -> None:
    attributes = call_attributes(
        CallStarted(
            call_id=1,
            api="chat_completions",
            model="gpt-4o\ud800",
            stream=True,
            server_address="api.openai.com",
            server_port=443,
            request={
                "temperature": 10**400,  # an integer no float holds: float() would raise
                "top_p": math.nan,
                "frequency_penalty": math.inf,
                "presence_penalty": 2**1000,
                "max_tokens": 2**63,
                "max_completion_tokens": -(2**63),
                "seed": -(2**63) - 1,
                "n": 2**64,
                "stop": ["\udc00"],
                "service_tier": "flex\ud800",
                "conversation": {"id": "conv_\ud800"},
            },
        )
    )
    assert attributes["gen_ai.request.model"] == "gpt-4o\ufffd"
    assert attributes["gen_ai.request.presence_penalty"] == float(2**1000)
    assert attributes["gen_ai.request.max_tokens"] == -(2**63)
    assert attributes["gen_ai.request.stop_sequences"] == ["\ufffd"]
    assert attributes["openai.request.service_tier"] == "flex\ufffd"
    assert attributes["gen_ai.conversation.id"] == "conv_\ufffd"
    for left_out in ("temperature", "top_p", "frequency_penalty", "seed", "choice.count"):
        assert f"gen_ai.request.{left_out}" not in attributes
