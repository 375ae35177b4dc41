"""Every PromQL expression a generated dashboard runs, with Grafana's variables made concrete.

The live test runs these against a real Prometheus to prove each panel's query parses and
returns data for streamtap's real metric names.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

DEFAULTS: Mapping[str, str] = {
    "datasource": "prometheus",
    "job": ".*",
    "model": ".*",
    "slo": "0.99",
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "1h",
}

_VAR = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def substitute(expr: str, values: Mapping[str, str] = DEFAULTS) -> str:
    """Replace `$name` and `${name}` in `expr` by `values[name]`.

    Args:
        expr: a panel target's PromQL.
        values: variable name (without `$`) -> concrete text; unknown variables raise KeyError.
    """

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise KeyError(f"dashboard variable ${name} has no value; known: {', '.join(sorted(values))}")
        return values[name]

    return _VAR.sub(replace, expr)


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # collapsed rows nest their panels


def panel_queries(path: Path | str, values: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """(panel title, concrete expr) for every Prometheus target of the dashboard at `path`.

    Args:
        path: a dashboard JSON file, e.g. dashboards/streamtap-overview.json.
        values: overrides of `DEFAULTS` (e.g. `{"__rate_interval": "4s"}` for a fast live test).
    """
    merged = {**DEFAULTS, **(values or {})}
    model = json.loads(Path(path).read_text())
    return [
        (panel["title"], substitute(target["expr"], merged))
        for panel in _panels(model["panels"])
        for target in panel.get("targets", [])
        if target.get("expr")
    ]
