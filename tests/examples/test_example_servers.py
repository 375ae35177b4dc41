"""examples/fastapi_app.py under uvicorn and examples/gunicorn_app.py under gunicorn, over loopback."""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2

from streamtap.fake import FakeConfig, FakeUpstream

from .conftest import BIN, EXAMPLES, TIMEOUT_S, Server, example_env, free_port, sample

QUESTION = "Say hi."
MESSAGES = [{"role": "user", "content": QUESTION}]
CHAT = {"api": "chat_completions", "model": "gpt-4o-mini"}


def test_fastapi_app_streams_the_answer_and_counts_it_on_metrics(fake: FakeUpstream) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = [sys.executable, "-m", "uvicorn", "fastapi_app:app", "--app-dir", str(EXAMPLES)]
    with Server([*args, "--port", str(port)], example_env(fake.base_url)) as server:
        server.wait_http(f"{base}/metrics/")
        fake.enqueue("status=503", "")

        with httpx2.Client(base_url=base, timeout=TIMEOUT_S) as http:
            with http.stream("GET", "/ask", params={"q": QUESTION}) as response:
                pieces = list(response.iter_text())
            redirect = http.get("/metrics")
            metrics = http.get("/metrics/").text
            fake.enqueue(*["status=503"] * 4)  # 3 attempts, then the non-streaming fallback
            failed = http.get("/ask", params={"q": QUESTION})

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert "".join(pieces) == fake.expected_text(model="gpt-4o-mini", messages=MESSAGES)
    assert (redirect.status_code, redirect.headers["location"]) == (307, f"{base}/metrics/")
    assert sample(metrics, "streamtap_requests_total", **CHAT, outcome="ok") == 1.0
    assert sample(metrics, "streamtap_retries_total", **CHAT, reason="server_error") == 1.0
    assert sample(metrics, "streamtap_attempts_total", **CHAT, result="error") == 1.0
    assert sample(metrics, "streamtap_attempts_total", **CHAT, result="ok") == 1.0
    assert (failed.status_code, failed.json()) == (502, {"detail": "upstream failed: InternalServerError"})


def test_gunicorn_workers_add_up_on_one_metrics_endpoint(tmp_path: Path) -> None:
    requests = 6
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    multiproc = tmp_path / "metrics"
    multiproc.mkdir()
    (multiproc / "counter_999999.db").write_bytes(b"stale")  # an earlier run's: wiped at start
    # 20 chunks 0.02 s apart: each answer takes ~0.4 s, so concurrent requests meet busy workers.
    with FakeUpstream(FakeConfig(chunks=20, gap=0.02)) as fake:
        env = example_env(
            fake.base_url,
            PROMETHEUS_MULTIPROC_DIR=str(multiproc),
            GUNICORN_BIND=f"127.0.0.1:{port}",
            GUNICORN_WORKERS="3",
            HOME=str(tmp_path),  # gunicorn's control socket lives under $HOME
        )
        args = [str(BIN / "gunicorn"), "-c", str(EXAMPLES / "gunicorn.conf.py"), "--chdir", str(EXAMPLES)]
        with Server([*args, "gunicorn_app:app"], env) as server:
            server.wait_http(f"{base}/metrics")
            with httpx2.Client(base_url=base, timeout=TIMEOUT_S) as http, ThreadPoolExecutor(3) as pool:
                answers = list(pool.map(lambda _: http.get("/ask", params={"q": QUESTION}), range(requests)))
                metrics = http.get("/metrics").text
        expected = fake.expected_text(model="gpt-4o-mini", messages=MESSAGES)

    assert [(a.status_code, a.text) for a in answers] == [(200, expected)] * requests
    assert len({a.headers["x-worker-pid"] for a in answers}) >= 2, "one worker served everything"
    assert sample(metrics, "streamtap_requests_total", **CHAT, outcome="ok") == float(requests)
    assert sample(metrics, "streamtap_attempts_total", **CHAT, result="ok") == float(requests)
    assert sample(metrics, "streamtap_active_streams", api="chat_completions") == 0.0
    assert server.process.returncode == 0, server.output
