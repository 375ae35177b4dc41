"""How the promtool test cases are written: a job's input series, its steady traffic, and the
alerts expected of it, their annotations expanded as Prometheus will render them.

The test groups (`_testcases.py`, `_testcases_errors.py`, `_testcases_targets.py`) are written
in these words, one job per behaviour, all of one model.
"""

from __future__ import annotations

from typing import Any

from ._series import counter, expand, series

Expected = tuple[dict[str, str], str]  # (labels, value text)


class Builder:
    """The alerts a test expects, each with its annotations as the rendered rules make them."""

    def __init__(self, rules: dict[str, Any]) -> None:
        self._rules = {
            (r["alert"], r["labels"]["severity"]): r
            for g in rules["groups"]
            for r in g["rules"]
            if "alert" in r
        }

    def alert(self, name: str, severity: str, labels: dict[str, str], value: str) -> dict[str, Any]:
        rule = self._rules[(name, severity)]
        full = {**labels, "severity": severity}
        annotations = {k: expand(v, value, full) for k, v in rule["annotations"].items()}
        return {"exp_labels": full, "exp_annotations": annotations}

    def case(
        self, name: str, checks: list[tuple[int, list[tuple[str, dict[str, str], str]]]]
    ) -> list[dict[str, Any]]:
        """`checks`: (minute, [(severity, labels, value)]) — exactly these alerts fire then."""
        return [
            {
                "eval_time": f"{minute}m",
                "alertname": name,
                "exp_alerts": [self.alert(name, sev, labels, value) for sev, labels, value in expected],
            }
            for minute, expected in checks
        ]


M = {"api": "chat_completions", "model": "gpt-4o"}


def of_job(name: str, job: str, values: str, **labels: str) -> dict[str, Any]:
    """The input series `name` of `job`, for the one model (`M`) every test's traffic is for."""
    return series(name, {"job": job, **M, **labels}, values)


def traffic(job: str, minutes: int, per_minute: float, *, attempts: bool = False) -> list[dict[str, Any]]:
    """`job`'s calls (and, with `attempts`, its upstream attempts), all ok, steady for `minutes`."""
    out = [of_job("streamtap_requests_total", job, counter((minutes, per_minute)), outcome="ok")]
    if attempts:
        out.append(of_job("streamtap_attempts_total", job, counter((minutes, per_minute)), result="ok"))
    return out
