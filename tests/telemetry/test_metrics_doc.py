"""docs/metrics.md and a real PrometheusRecorder registry must agree on names, types and labels."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import CollectorRegistry

from streamtap._events import BreakerTransition, CallObserver, CallStarted, Fanout
from streamtap._prom_metrics import SPECS
from streamtap._prometheus import PrometheusRecorder

from ._builder import Call, two_429s_then_success

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
ROW = re.compile(r"^\| `(streamtap_[a-z_]+)` \| (counter|gauge|histogram) \| ([^|]+) \|")


def documented() -> dict[str, tuple[str, frozenset[str]]]:
    rows: dict[str, tuple[str, frozenset[str]]] = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        match = ROW.match(line)
        if match:
            name, kind, labels = match.groups()
            assert name not in rows, f"{name} documented twice"
            rows[name] = (kind, frozenset(re.findall(r"`([a-z_]+)`", labels)))
    return rows


class Failing:
    def start_call(self, event: CallStarted) -> CallObserver:
        raise RuntimeError("boom")

    def breaker_changed(self, event: BreakerTransition) -> None:
        pass

    def telemetry_failed(self, error: BaseException) -> None:
        pass


def exposed(registry: CollectorRegistry) -> dict[str, tuple[str, frozenset[str]]]:
    """Feed every kind of event so that every metric has samples, then read the registry."""
    recorder = PrometheusRecorder(registry)
    two_429s_then_success([recorder])
    c = Call(Fanout([Failing(), recorder])).start()
    c.attempt_fails("server_error", status=500, retry=False).suppressed("server_error", "attempts")
    c.breaker("closed", "open").fallback("non_streaming", "gpt-4o-mini", ok=True)
    c.finish("ok")
    families: dict[str, tuple[str, frozenset[str]]] = {}
    for family in registry.collect():
        name = family.name + "_total" if family.type == "counter" else family.name
        labels = frozenset(k for s in family.samples for k in s.labels if k != "le")
        assert family.samples, f"{name} has no samples: extend the scenario"
        families[name] = (family.type, labels)
    return families


def test_doc_and_registry_agree(registry: CollectorRegistry) -> None:
    doc = documented()
    real = exposed(registry)
    assert set(doc) == set(real), (
        f"only in docs/metrics.md: {sorted(set(doc) - set(real))}; only in the registry: {sorted(set(real) - set(doc))}"
    )
    for name, (kind, labels) in real.items():
        assert doc[name] == (kind, labels), f"{name}: docs say {doc[name]}, the registry has {(kind, labels)}"


def test_doc_covers_the_spec_table() -> None:
    assert {spec.name for spec in SPECS} == set(documented())
    assert len(documented()) == 16
