"""The preflight report: one `Check` per step and a `PreflightReport` that prints them (pure)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

# The steps in the order they run; the report and the JSON keep this order.
STEPS = ("api_key", "base_url", "dns", "tcp", "tls", "models")


@dataclass(frozen=True)
class Check:
    """The result of one preflight step.

    Args:
        name: the step, one of ``api_key``, ``base_url``, ``dns``, ``tcp``, ``tls``, ``models``.
        ok: the step passed (or did not apply). A passed step with a `hint` is a warning.
        detail: what was found, in one line; never the API key (at most its fingerprint).
        hint: how to fix a failure (or what to look at for a warning); None when all is well.
        seconds: how long the step took.
        skipped: the step did not run: an earlier step it needs failed (then `ok` is False),
            or it does not apply, like TLS for an ``http://`` base URL (then `ok` is True).
    """

    name: str
    ok: bool
    detail: str
    hint: str | None = None
    seconds: float = 0.0
    skipped: bool = False

    @property
    def status(self) -> str:
        """``ok``, ``warn`` (passed with a hint), ``fail`` or ``skip``."""
        if self.skipped:
            return "skip"
        if not self.ok:
            return "fail"
        return "warn" if self.hint else "ok"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping of every field plus `status`."""
        return {
            "name": self.name,
            "status": self.status,
            "ok": self.ok,
            "skipped": self.skipped,
            "detail": self.detail,
            "hint": self.hint,
            "seconds": round(self.seconds, 6),
        }


def skipped(name: str, reason: str, *, ok: bool = False) -> Check:
    """A step that did not run, with the reason in its detail."""
    return Check(name, ok, f"skipped: {reason}", skipped=True)


_SYMBOLS = {"ok": "✓", "warn": "!", "fail": "✗", "skip": "-"}


@dataclass(frozen=True)
class PreflightReport:
    """Every preflight check, in order; `ok` when none failed.

    ``str(report)`` is the human-readable report (one ✓/✗ line per check, the hint under each
    failure or warning); `to_dict` / `to_json` are the machine-readable forms. Neither ever
    contains the API key.

    Args:
        checks: the checks in the order they ran.
        ok: True when every check passed or did not apply.
    """

    checks: tuple[Check, ...]
    ok: bool

    @classmethod
    def from_checks(cls, checks: tuple[Check, ...] | list[Check]) -> PreflightReport:
        """A report whose `ok` is derived from the checks."""
        checks = tuple(checks)
        return cls(checks, all(check.ok for check in checks))

    def check(self, name: str) -> Check:
        """The check named `name` (KeyError naming the present names if absent)."""
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(f"no check named {name!r}; the report has {[c.name for c in self.checks]}")

    @property
    def failures(self) -> tuple[Check, ...]:
        """The checks that failed, including those skipped because an earlier one failed."""
        return tuple(check for check in self.checks if not check.ok)

    def to_dict(self) -> dict[str, Any]:
        """``{"ok": bool, "checks": [Check.to_dict(), ...]}``."""
        return {"ok": self.ok, "checks": [check.to_dict() for check in self.checks]}

    def to_json(self) -> str:
        """`to_dict` as indented JSON (non-ASCII characters kept)."""
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    def __str__(self) -> str:
        width = max((len(check.name) for check in self.checks), default=0)
        lines = []
        for check in self.checks:
            timing = "" if check.skipped else f" ({check.seconds * 1000:.0f} ms)"
            lines.append(f"{_SYMBOLS[check.status]} {check.name:<{width}}  {check.detail}{timing}")
            if check.hint and not check.skipped:
                lines.append(f"  {' ' * width}  hint: {check.hint}")
        failed = [check for check in self.checks if check.status == "fail"]
        if self.ok:
            lines.append("preflight passed")
        else:
            names = ", ".join(check.name for check in failed) or "skipped checks"
            lines.append(f"preflight FAILED: {names}")
        return "\n".join(lines)


def readiness(report: PreflightReport, needed: tuple[str, ...]) -> tuple[bool, str]:
    """Whether the `needed` checks of `report` passed, and a one-line detail: what passed, or
    each failure with the fix hint `streamtap check` prints under it."""
    failed = [check for check in report.checks if check.name in needed and not check.ok]
    if not failed:
        return True, ""
    return False, "; ".join(
        f"{check.name}: {check.detail}" + (f" (hint: {check.hint})" if check.hint else "") for check in failed
    )
