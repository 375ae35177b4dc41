"""Option types and callbacks that more than one `streamtap` command uses."""

from __future__ import annotations

import math
from typing import Any

import click


class Number(click.FloatRange):
    """click's FloatRange, which lets `nan` through (every comparison with it is false), and
    `inf` when it has no maximum: no number option of streamtap's means "for ever"."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        number: float = super().convert(value, param, ctx)
        if number != number:
            self.fail(f"{value!r} is not a number", param, ctx)
        if number in (math.inf, -math.inf):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


def http_url(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """A base URL every request can be sent to (`base_url_problem`), or None."""
    if value is None:
        return None
    from ._fallback import BASE_URL_ACCEPTED, base_url_problem, without_userinfo

    problem = base_url_problem(value)
    if problem is not None:
        raise click.BadParameter(f"must be {BASE_URL_ACCEPTED}, got {without_userinfo(value)!r}: {problem}")
    return value
