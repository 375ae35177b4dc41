"""promtool input-series notation built from readable per-minute rates (the tests step 1m)."""

from __future__ import annotations

import re
from typing import Any


def _n(value: float) -> str:
    text = f"{round(value, 6):.6f}".rstrip("0").rstrip(".")
    return text if text not in ("-0", "") else "0"


def counter(*segments: tuple[int, float], start: float = 0.0) -> str:
    """A counter that grows by `per_minute` for `minutes`, segment after segment.

    promtool adds up `per_minute` in floating point, so a flat segment after a fractional rate
    (1.8 a minute) can start a hair below where that one ended: a counter reset to `rate()`. Keep
    the rates before a flat segment whole.

    Args:
        segments: (minutes, per_minute) pairs; the first sample (t=0) is `start`.
        start: the counter's first value.
    """
    parts, value, first = [], start, True
    for minutes, per_minute in segments:
        if first:
            parts.append(f"{_n(value)}+{_n(per_minute)}x{minutes}")
            value += per_minute * minutes
            first = False
        else:
            value += per_minute
            parts.append(f"{_n(value)}+{_n(per_minute)}x{minutes - 1}")
            value += per_minute * (minutes - 1)
    return " ".join(parts)


def gauge(*segments: tuple[int, float | None]) -> str:
    """A gauge holding `value` for `minutes` samples (one a minute) per segment; None: no sample.

    Args:
        segments: (minutes, value) pairs.
    """
    return " ".join(
        f"_x{minutes}" if value is None else f"{_n(value)}x{minutes - 1}" for minutes, value in segments
    )


def series(name: str, labels: dict[str, str], values: str) -> dict[str, Any]:
    """One promtool input series."""
    inner = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{inner}}}", "values": values}


_WITH = re.compile(r"\{\{ with \$labels\.(\w+) \}\}(.*?)(?:\{\{ else \}\}(.*?))?\{\{ end \}\}", re.S)
_VALUE = re.compile(
    r"\{\{ (?:\$value \| humanizePercentage|\$value \| humanizeDuration|printf \"%\.\d+f\" \$value) \}\}"
)
_LABEL = re.compile(r"\{\{ \$labels\.(\w+) \}\}")


def expand(template: str, value: str, labels: dict[str, str]) -> str:
    """Expand the few template forms our annotations use, with the value as the test expects it.

    The expected value text (e.g. "20%") is written by hand in each test case, so promtool checks
    that the real alert value, formatted by Prometheus, equals it.

    Args:
        template: an annotation template from the rendered rules.
        value: the value text the template must print.
        labels: the alert's labels.
    """

    def with_(m: re.Match[str]) -> str:
        label, then, otherwise = m.group(1), m.group(2), m.group(3) or ""
        return then.replace("{{ . }}", labels[label]) if label in labels else otherwise

    text = _WITH.sub(with_, template)
    text = _VALUE.sub(lambda _: value, text)
    text = _LABEL.sub(lambda m: labels.get(m.group(1), "<no value>"), text)
    if "{{" in text:
        raise ValueError(f"template form not handled by the test expander: {text!r}")
    return text
