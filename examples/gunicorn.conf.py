"""gunicorn settings for gunicorn_app.py: several workers, one /metrics for all of them.

prometheus_client's multi-process mode needs, in this order:
1. PROMETHEUS_MULTIPROC_DIR set before any worker imports prometheus_client (set it in the
   environment; this file falls back to a fresh temporary directory);
2. the directory emptied when gunicorn starts, so counts of an earlier run do not leak in;
3. `mark_process_dead(pid)` when a worker exits, so its live gauges (active streams, circuit
   state) stop counting. Its counters stay: totals never go down when a worker is replaced.
"""

from __future__ import annotations

import glob
import os
import tempfile
from typing import Any

import streamtap

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "3"))
# Do not load the app in the master: each worker builds its own OpenAI client after the fork.
preload_app = False

if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="streamtap-metrics-")


def on_starting(server: Any) -> None:
    for stale in glob.glob(os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], "*.db")):
        os.remove(stale)


def child_exit(server: Any, worker: Any) -> None:
    streamtap.mark_process_dead(worker.pid)
