"""Records every garbage collection's pause in the processes proxy_load.py starts.

proxy_load.py puts this directory first on the PYTHONPATH of the fake upstream and of each
proxy under test, with STREAMTAP_BENCH_GC_DIR naming where to write. Python imports
`sitecustomize` at start-up, so the process gets a `gc.callbacks` hook that notes the
(monotonic start, generation, seconds) of each collection, and writes them all to
`<dir>/gc-<pid>.json` when the process exits. The orchestrator keeps the pauses that fall in
the measured windows (time.monotonic is the same clock in every process on Linux).
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

_DIR = os.environ.get("STREAMTAP_BENCH_GC_DIR")


def _install(out: Path) -> None:
    pauses: list[tuple[float, int, float]] = []
    started = [0.0]

    def note(phase: str, info: dict[str, Any]) -> None:
        now = time.monotonic()
        if phase == "start":
            started[0] = now
        else:
            pauses.append((started[0], info["generation"], now - started[0]))

    def write() -> None:
        out.write_text(json.dumps({"pid": os.getpid(), "pauses": pauses}))

    def on_term(signum: int, frame: object) -> None:
        # uvicorn restores this handler after its graceful shutdown and re-raises the signal.
        write()
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)

    gc.callbacks.append(note)
    atexit.register(write)
    signal.signal(signal.SIGTERM, on_term)


if _DIR:
    _install(Path(_DIR) / f"gc-{os.getpid()}.json")
