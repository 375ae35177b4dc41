"""Option types and callbacks that more than one `streamtap` command uses.

Every option of every command is an `EnvOption` (declared with `option`): it also reads its
STREAMTAP_<COMMAND>_<OPTION> variable, refuses that variable set but empty (click would take it
for unset, and so silently for the default), and names in its errors what the user set: the
variable when the value came from it, the flag otherwise.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from typing import Any

import click
from click.core import ParameterSource
from click.decorators import FC


class EnvOption(click.Option):
    """A click option whose errors name where its value came from, and whose variable, set but
    empty, is a usage error naming it (unless `empty_ok`, or a flag: then it is unset, as click
    has it).

    Args:
        accepts: what the option takes, for the error about its empty variable (default: said
            from its type).
        empty_ok: an empty variable means the default (a list option's empty list, say).
    """

    def __init__(self, *args: Any, accepts: str | None = None, empty_ok: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.accepts = accepts
        # A flag's empty variable is how compose and Helm files turn it off: unset, as in click.
        self.empty_ok = empty_ok or self.is_bool_flag

    def envvar_name(self, ctx: click.Context) -> str | None:
        """The variable this option reads (its own `envvar`, else the command's prefix's)."""
        if isinstance(self.envvar, str):
            return self.envvar
        if self.allow_from_autoenv and ctx.auto_envvar_prefix is not None and self.name:
            return f"{ctx.auto_envvar_prefix}_{self.name.upper()}"
        return None

    def resolve_envvar_value(self, ctx: click.Context) -> str | None:
        name = self.envvar_name(ctx)
        value = None if name is None else os.environ.get(name)
        if value == "" and not self.empty_ok and not ctx.resilient_parsing:  # not while completing
            assert name is not None
            raise click.UsageError(
                f"{name} ({self.opts[0]}) is set but empty; unset it or give it {self.accepted()}", ctx
            )
        return value or None

    def get_error_hint(self, ctx: click.Context | None) -> str:
        # click names the flag whatever gave the value, and adds "(env var: ...)" only to
        # options with an explicit envvar, a flag's value included.
        if (
            ctx is not None
            and self.name
            and ctx.get_parameter_source(self.name) is ParameterSource.ENVIRONMENT
        ):
            return f"{self.envvar_name(ctx)} ({' / '.join(self.opts)})"
        return click.Parameter.get_error_hint(self, ctx)

    def accepted(self) -> str:
        """What the option takes, in words."""
        if self.accepts is not None:
            return self.accepts
        kind = self.type
        if isinstance(kind, click.IntRange | click.FloatRange):
            what = "an integer" if isinstance(kind, click.IntRange) else "a number"
            bounds = [
                f"{sign} {bound:g}"
                for sign, bound in (
                    (">" if kind.min_open else ">=", kind.min),
                    ("<" if kind.max_open else "<=", kind.max),
                )
                if bound is not None
            ]
            return f"{what} {' and '.join(bounds)}".strip()
        if isinstance(kind, click.types.IntParamType):
            return "an integer"
        if isinstance(kind, click.Path):
            return "the path of a file"
        return f"a value for {self.opts[0]}"


def option(*decls: str, nonblank: bool = False, **attrs: Any) -> Callable[[FC], FC]:
    """`click.option` with `EnvOption`: how every option of streamtap's is declared.
    `nonblank`: an empty or all-space value is refused, saying what it `accepts`."""
    if nonblank:
        attrs["callback"] = not_blank(attrs["accepts"])
    return click.option(*decls, cls=EnvOption, **attrs)


def origin(ctx: click.Context, name: str) -> str:
    """What gave parameter `name` its value, as an error raised after parsing should name it:
    its variable when it came from there, else its flag."""
    param = next(p for p in ctx.command.params if p.name == name)
    if isinstance(param, EnvOption) and ctx.get_parameter_source(name) is ParameterSource.ENVIRONMENT:
        return param.envvar_name(ctx) or param.opts[0]
    return param.opts[0]


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
    from ._fallback import BASE_URL_ACCEPTED, base_url_problem, shown_url

    problem = base_url_problem(value)
    if problem is not None:
        raise click.BadParameter(f"must be {BASE_URL_ACCEPTED}, got {shown_url(value)!r}: {problem}")
    return value


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
ENV_NAME_ACCEPTED = "the name of an environment variable (letters, digits and _, not starting with a digit)"


def env_name(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """The name of an environment variable, or None. A value that is not one is refused without
    being shown: given where a variable's name belongs, it is most often the secret itself."""
    if value is not None and not _ENV_NAME.fullmatch(value):
        raise click.BadParameter(
            f"must be {ENV_NAME_ACCEPTED}; the value given is not one, and is not shown (is it the secret itself?)"
        )
    return value


HOST_ACCEPTED = "an address or name of this machine's interface, e.g. 127.0.0.1 (loopback) or 0.0.0.0 (all)"


def not_blank(accepted: str) -> Callable[[click.Context, click.Parameter, str | None], str | None]:
    """A callback refusing an empty (or all-space) value, which an option given as `--flag ""`
    would otherwise take: a host "" binds every interface, a key "" refuses every request."""

    def check(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise click.BadParameter(f"must be {accepted}, got {value!r}")
        return value

    return check
