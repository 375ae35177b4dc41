"""docs/configuration.md names every option streamtap has, with the defaults the code has."""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import pytest

import streamtap
from streamtap._cli import main
from streamtap._proxy_config import ProxyConfig
from streamtap._taxonomy import FALLBACK_KINDS

DOC = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
SETTINGS = {
    "Policy": streamtap.Policy,
    "BudgetSettings": streamtap.BudgetSettings,
    "BreakerSettings": streamtap.BreakerSettings,
}


def section(heading: str) -> str:
    """The text under a heading line, up to the next heading of any level."""
    lines = DOC.splitlines()
    matches = [i for i, line in enumerate(lines) if re.fullmatch(r"#{2,4} " + re.escape(heading), line)]
    assert len(matches) == 1, f"docs/configuration.md needs exactly one heading {heading!r}"
    start = matches[0] + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("#")), len(lines))
    return "\n".join(lines[start:end])


def row(text: str, first_cell: str) -> list[str]:
    """The cells of the table row whose first cell is `first_cell` (exactly one such row)."""
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in text.splitlines()
        if line.startswith("|")
    ]
    found = [cells for cells in rows if cells[0] == first_cell]
    assert len(found) == 1, f"no single table row starting with {first_cell}"
    return found[0]


def shown(value: object) -> str:
    """How a default is written in the tables: `4`, `0.5`, `None`, `"text"`, `Policy()`."""
    if isinstance(value, str):
        return f"`{json.dumps(value)}`"
    if isinstance(value, (streamtap.Policy, streamtap.BudgetSettings, streamtap.BreakerSettings)) and (
        value == type(value)()
    ):
        return f"`{type(value).__name__}()`"
    return f"`{value!r}`"


def field_default(field: dataclasses.Field[Any]) -> object:
    if field.default is not dataclasses.MISSING:
        return field.default
    assert field.default_factory is not dataclasses.MISSING
    return field.default_factory()


@pytest.mark.parametrize(
    ("heading", "cls"),
    [*SETTINGS.items(), ("The TOML file", ProxyConfig)],
    ids=[*SETTINGS, "ProxyConfig"],
)
def test_every_field_is_documented_with_its_default(heading: str, cls: type) -> None:
    text = section(heading)
    for field in dataclasses.fields(cls):
        cells = row(text, f"`{field.name}`")
        assert cells[1] == shown(field_default(field)), f"{cls.__name__}.{field.name}"


def test_every_engine_parameter_has_a_row() -> None:
    text = section("`Engine`")
    for name in inspect.signature(streamtap.Engine).parameters:
        row(text, f"`{name}`")


def signature(function: Callable[..., Any]) -> str:
    """`name(a, *, b=None, c="text")` as the doc writes it."""
    parts: list[str] = []
    for parameter in inspect.signature(function).parameters.values():
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY and "*" not in parts:
            parts.append("*")
        default = parameter.default
        if default is inspect.Parameter.empty:
            parts.append(parameter.name)
        elif callable(default):  # `time.monotonic`, not its repr (`<built-in function ...>`)
            owner = getattr(default, "__self__", None)  # random.random is a method of random's Random
            module = getattr(default, "__module__", None) or type(owner).__module__
            parts.append(f"{parameter.name}={module}.{default.__name__}")
        else:
            parts.append(
                f"{parameter.name}={json.dumps(default) if isinstance(default, str) else repr(default)}"
            )
    return f"`{function.__qualname__}({', '.join(parts)})`"


@pytest.mark.parametrize(
    "function",
    [
        streamtap.instrument,
        streamtap.Engine,
        streamtap.StreamtapTransport,
        streamtap.setup_telemetry,
        streamtap.serve_metrics,
        streamtap.metrics_wsgi_app,
        streamtap.metrics_asgi_app,
        streamtap.mark_process_dead,
        streamtap.Fallback.model,
        streamtap.Fallback.upstream,
        streamtap.Fallback.non_streaming,
        streamtap.Fallback.cached,
    ],
    ids=lambda function: function.__qualname__,
)
def test_every_public_signature_is_documented_with_its_defaults(function: Callable[..., Any]) -> None:
    assert signature(function) in " ".join(DOC.split())


def test_every_fallback_kind_is_documented() -> None:
    text = section("Fallbacks")
    for kind in FALLBACK_KINDS:
        assert f"| `{kind}` |" in text, kind


COMMANDS = sorted(main.commands)


def option_rows() -> list[tuple[str, click.Option, str]]:
    root = click.Context(main, info_name="streamtap", auto_envvar_prefix="STREAMTAP")
    out = []
    for name in COMMANDS:
        command = main.commands[name]
        context = click.Context(command, info_name=name, parent=root)
        for param in command.params:
            assert isinstance(param, click.Option)
            assert param.name is not None
            envvar = param.envvar or f"{context.auto_envvar_prefix}_{param.name.upper()}"
            assert isinstance(envvar, str)
            out.append((name, param, envvar))
    return out


def test_the_doc_covers_every_command() -> None:
    for name in COMMANDS:
        section(f"`streamtap {name}`")


@pytest.mark.parametrize(
    ("command", "option", "envvar"), option_rows(), ids=[f"{c}{o.opts[0]}" for c, o, _ in option_rows()]
)
def test_every_cli_option_is_documented_with_its_variable_and_default(
    command: str, option: click.Option, envvar: str
) -> None:
    text = section(f"`streamtap {command}`")
    first = " / ".join(f"`{opt}`" for opt in [*option.opts, *option.secondary_opts])
    cells = row(text, first)
    assert cells[1] == f"`{envvar}`"
    default = option.default
    if isinstance(default, (str, int, float)) and not isinstance(default, bool):
        assert cells[2].startswith(f"`{default}`"), f"{command} {first} default {default!r}: {cells[2]}"
