"""alerts/alertmanager.yml: valid, routed by severity, grouped and inhibited as its comments say,
checked by amtool and by a real Alertmanager on loopback."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import _repo  # noqa: F401
import pytest
import yaml
from _repo import ROOT

from conftest import require_binary
from streamtap.monitoring._servers import ALERTMANAGER_NAMES, Server, WebhookReceiver, run_alertmanager
from streamtap.monitoring.rules import Params, render


def _alert_rules() -> list[dict[str, object]]:
    return [r for g in render(Params())["groups"] for r in g["rules"] if "alert" in r]


@pytest.mark.integration
def test_alertmanager_config_is_valid() -> None:
    amtool = require_binary("amtool")
    result = subprocess.run(
        [amtool, "check-config", "alerts/alertmanager.yml"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"- 2 inhibit rules\n - 3 receivers", result.stdout)


@pytest.mark.integration
@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["severity=critical", "alertname=StreamtapErrorRateSpike"], "page"),
        (["severity=warning", "alertname=StreamtapRetryStorm"], "notify"),
        (["severity=ticket", "alertname=StreamtapErrorBudgetBurn"], "ticket"),
        (["alertname=Unlabelled"], "notify"),
    ],
)
def test_alertmanager_routes_by_severity(labels: list[str], receiver: str) -> None:
    amtool = require_binary("amtool")
    result = subprocess.run(
        [amtool, "config", "routes", "test", "--config.file=alerts/alertmanager.yml", *labels],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == receiver


def _matches(matchers: list[str], labels: dict[str, str]) -> bool:
    """Whether Alertmanager `matchers` of the forms name="v" and name=~"a|b" match `labels`."""
    for matcher in matchers:
        found = re.fullmatch(r'(\w+)(=~|=)"(.*)"', matcher)
        assert found, f"matcher form not handled here: {matcher}"
        name, op, value = found.groups()
        text = labels.get(name, "")
        if (op == "=" and text != value) or (op == "=~" and not re.fullmatch(value, text)):
            return False
    return True


def _inhibit_rules() -> list[dict[str, list[str]]]:
    rules: list[dict[str, list[str]]] = yaml.safe_load((ROOT / "alerts" / "alertmanager.yml").read_text())[
        "inhibit_rules"
    ]
    return rules


def test_critical_inhibits_the_ticket_of_the_same_alert_and_job() -> None:
    assert _inhibit_rules()[0] == {
        "source_matchers": ['severity="critical"'],
        "target_matchers": ['severity="ticket"'],
        "equal": ["alertname", "job"],
    }


def test_every_inhibit_rule_can_inhibit_every_alert_its_target_matchers_name() -> None:
    """No dead matcher: every value a target matcher names (each alternative of a regex) is that of
    an alert the rules make which a source alert of the same rule can inhibit, the labels in
    `equal` that the rules set being the same in both (`job` is only known at run time)."""
    alerts = [{"alertname": str(r["alert"]), **r["labels"]} for r in _alert_rules()]  # type: ignore[dict-item]
    for rule in _inhibit_rules():
        inhibited = [
            target
            for target in alerts
            if _matches(rule["target_matchers"], target)
            and any(
                source is not target
                and _matches(rule["source_matchers"], source)
                and all(source.get(label) == target.get(label) for label in rule["equal"] if label != "job")
                for source in alerts
            )
        ]
        assert inhibited, rule
        for matcher in rule["target_matchers"]:
            name, _, value = re.fullmatch(r'(\w+)(=~|=)"(.*)"', matcher).groups()  # type: ignore[union-attr]
            assert set(value.split("|")) == {target[name] for target in inhibited}, (rule, matcher)


def test_pages_are_grouped_by_job_and_the_rest_by_alert_and_job() -> None:
    route = yaml.safe_load((ROOT / "alerts" / "alertmanager.yml").read_text())["route"]
    assert route["group_by"] == ["alertname", "job"]
    by_receiver = {r["receiver"]: r.get("group_by", route["group_by"]) for r in route["routes"]}
    assert by_receiver == {"page": ["job"], "ticket": ["alertname", "job"], "notify": ["alertname", "job"]}


def _config_to(hook: WebhookReceiver, **waits: str) -> dict[str, Any]:
    """alerts/alertmanager.yml with every receiver posting to `hook`, and `waits` (e.g.
    group_wait) set on every route, so a test need not wait the real 10 s to 5 min."""
    config: dict[str, Any] = yaml.safe_load((ROOT / "alerts" / "alertmanager.yml").read_text())
    for receiver in config["receivers"]:
        for webhook in receiver.get("webhook_configs", []):
            webhook["url"] = hook.url  # nothing leaves the machine
    for route in [config["route"], *config["route"]["routes"]]:
        route.update(waits)
    return config


def _post(alertmanager: Server, alerts: list[tuple[str, str, str]]) -> None:
    body = [
        {"labels": {"alertname": name, "severity": severity, "job": job}} for name, severity, job in alerts
    ]
    request = urllib.request.Request(
        f"{alertmanager.url}/api/v2/alerts",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200


@pytest.mark.integration
def test_a_real_alertmanager_sends_one_page_per_job(tmp_path: Path) -> None:
    """The error-rate spike and the fast budget burn of one incident are one page, listing both;
    another job's spike is a page of its own, and warnings stay one notification each."""
    binary = require_binary(*ALERTMANAGER_NAMES)
    posted = [
        ("StreamtapErrorRateSpike", "critical", "a"),
        ("StreamtapErrorBudgetBurn", "critical", "a"),
        ("StreamtapErrorRateSpike", "critical", "b"),
        ("StreamtapUpstreamErrorRateSpike", "warning", "a"),
        ("StreamtapRetryStorm", "warning", "a"),
    ]
    with WebhookReceiver() as hook:
        config = _config_to(hook, group_wait="1s")
        with run_alertmanager(tmp_path / "am", hook.url, binary=binary, config=config) as alertmanager:
            _post(alertmanager, posted)
            hook.wait_for(lambda alerts: len(alerts) == len(posted), timeout=15)
            time.sleep(2)  # more than group_wait again: nothing else is coming
            sent = sorted(
                (
                    n["receiver"],
                    ",".join(f"{k}={v}" for k, v in sorted(n["groupLabels"].items())),
                    sorted(a["labels"]["alertname"] for a in n["alerts"]),
                )
                for n in hook.notifications
            )
    assert sent == [
        ("notify", "alertname=StreamtapRetryStorm,job=a", ["StreamtapRetryStorm"]),
        ("notify", "alertname=StreamtapUpstreamErrorRateSpike,job=a", ["StreamtapUpstreamErrorRateSpike"]),
        ("page", "job=a", ["StreamtapErrorBudgetBurn", "StreamtapErrorRateSpike"]),
        ("page", "job=b", ["StreamtapErrorRateSpike"]),
    ]


@pytest.mark.integration
def test_a_real_alertmanager_inhibits_what_the_config_says(tmp_path: Path) -> None:
    """alerts/alertmanager.yml in a loopback Alertmanager: alerts are posted, their states read."""
    binary = require_binary(*ALERTMANAGER_NAMES)
    posted = [
        ("StreamtapErrorBudgetBurn", "critical", "a"),
        ("StreamtapErrorBudgetBurn", "ticket", "a"),
        ("StreamtapErrorBudgetBurn", "ticket", "b"),
        ("StreamtapErrorRateSpike", "critical", "a"),
        ("StreamtapUpstreamErrorRateSpike", "warning", "a"),
        ("StreamtapScrapeTargetDown", "warning", "c"),
        ("StreamtapInstrumentationAbsent", "warning", "c"),
        ("StreamtapInstrumentationAbsent", "warning", "d"),
    ]
    expected = dict.fromkeys(posted, "active") | {
        ("StreamtapErrorBudgetBurn", "ticket", "a"): "suppressed",  # the page says it
        ("StreamtapInstrumentationAbsent", "warning", "c"): "suppressed",  # no scrape, no metrics
    }
    with WebhookReceiver() as hook:
        config = _config_to(hook)
        with run_alertmanager(tmp_path / "am", hook.url, binary=binary, config=config) as alertmanager:
            _post(alertmanager, posted)
            states: dict[tuple[str, str, str], str] = {}
            deadline = time.monotonic() + 10
            while states != expected and time.monotonic() < deadline:
                time.sleep(0.2)  # the inhibitor learns of new source alerts asynchronously
                with urllib.request.urlopen(f"{alertmanager.url}/api/v2/alerts", timeout=5) as response:
                    states = {
                        (a["labels"]["alertname"], a["labels"]["severity"], a["labels"]["job"]): a["status"][
                            "state"
                        ]
                        for a in json.loads(response.read())
                    }
            assert states == expected
