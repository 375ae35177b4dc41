"""The garbage-collector settings of the long-running servers."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
import uvicorn

from streamtap._heap import GEN0_THRESHOLD, settle_for_serving
from streamtap._proxy_config import ProxyConfig
from streamtap._proxy_server import serve


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


def test_settling_freezes_the_heap_and_raises_only_the_young_threshold(restored_gc: None) -> None:
    gc.set_threshold(700, 11, 12)
    alive_before: list[int] = []  # a list: tracked by the collector
    assert any(o is alive_before for o in gc.get_objects())
    settle_for_serving()
    assert gc.get_threshold() == (GEN0_THRESHOLD, 11, 12)
    assert gc.get_freeze_count() > 0
    assert not any(o is alive_before for o in gc.get_objects())  # frozen: no collection sees it


def test_the_proxy_settles_the_heap_before_it_serves(
    restored_gc: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[int, int]] = []

    async def serving(self: uvicorn.Server, sockets: object = None) -> None:  # instead of serving:
        seen.append((gc.get_threshold()[0], gc.get_freeze_count()))  # what the heap looks like then

    monkeypatch.setattr(uvicorn.Server, "serve", serving)
    gc.unfreeze()
    serve(ProxyConfig(upstream="http://127.0.0.1:9/v1", listen="127.0.0.1:0"))
    assert len(seen) == 1
    threshold, frozen = seen[0]
    assert threshold == GEN0_THRESHOLD
    assert frozen > 0
