"""How much memory the proxy holds for the streams it relays: its peak RSS under long streams.

Starts the fake upstream (in this process) and `streamtap proxy` (a process of its own, from
`--src` when given: an earlier checkout's `src` to compare with), then reads `--streams`
streams of `--chunks` content chunks at once through it, every byte as it comes, and samples
the proxy's resident memory (VmRSS) every 50 ms. Loopback only; it ends by itself.

    python benchmarks/proxy_memory.py                            # 100 streams of 20,000 chunks
    python benchmarks/proxy_memory.py --src /path/to/old/src     # the same for another checkout
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import httpx2

from streamtap.fake import FakeConfig, FakeUpstream

_BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Write a long story."}], "stream": True}


_PROXY = [sys.executable, "-c", "from streamtap._cli import main; main()", "proxy"]


def rss_mib(pid: int) -> float:
    """The process's resident memory, in MiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB$", status, re.MULTILINE)
    assert match is not None, status
    return int(match[1]) / 1024


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--chunks", type=int, default=20_000, help="content chunks per stream")
    parser.add_argument("--gap", type=float, default=0.002, help="seconds between chunks (0.002)")
    parser.add_argument("--src", help="run the proxy from this src directory (default: this checkout's)")
    args = parser.parse_args()

    port = free_port()
    env = {**os.environ, "OTEL_SDK_DISABLED": "true"}
    if args.src:
        env["PYTHONPATH"] = args.src
    with FakeUpstream(FakeConfig(chunks=args.chunks, gap=args.gap)) as fake:
        proxy = subprocess.Popen(
            [*_PROXY, "--upstream", fake.base_url, "--listen", f"127.0.0.1:{port}"],
            env=env,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise SystemExit("the proxy did not start") from None
                    time.sleep(0.1)
            idle = rss_mib(proxy.pid)
            peak = idle
            done = threading.Event()
            relayed: list[int] = []

            def sample() -> None:
                nonlocal peak
                while not done.wait(0.05):
                    peak = max(peak, rss_mib(proxy.pid))

            def read() -> None:
                total = 0
                last = b""
                with (
                    httpx2.Client(timeout=120) as client,
                    client.stream(
                        "POST", f"http://127.0.0.1:{port}/v1/chat/completions", json=_BODY
                    ) as answer,
                ):
                    for piece in answer.iter_raw():
                        total += len(piece)
                        last = (last + piece)[-64:]
                if answer.status_code == 200 and last.endswith(b"data: [DONE]\n\n"):
                    relayed.append(total)  # a stream read whole, to its end

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            started = time.monotonic()
            readers = [threading.Thread(target=read) for _ in range(args.streams)]
            for reader in readers:
                reader.start()
            for index, reader in enumerate(readers, 1):
                reader.join()
                print(f"\r{index}/{args.streams} streams read", end="", file=sys.stderr, flush=True)
            print(file=sys.stderr)
            done.set()
            sampler.join()
            after = rss_mib(proxy.pid)
        finally:
            proxy.kill()
            proxy.wait(timeout=30)
    seconds = time.monotonic() - started
    print(
        f"{args.streams} streams x {args.chunks} chunks ({sum(relayed) / 2**20:.0f} MiB relayed, "
        f"{len(relayed)} streams whole, {seconds:.0f} s): proxy RSS idle {idle:.0f} MiB, "
        f"peak {peak:.0f} MiB (+{peak - idle:.0f}), after {after:.0f} MiB"
    )


if __name__ == "__main__":
    main()
