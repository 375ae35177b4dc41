"""What one small write on a loopback TCP socket costs the writer's CPU on this machine.

The proxy writes every relayed event to its client's socket; on loopback the kernel delivers
the bytes inside that write (the receiver's TCP processing, and waking the receiver). This
times it alone: a sender pinned to one CPU writes `--messages` messages of `--size` bytes to
a receiver process that reads and discards them, and reports the sender's CPU time per write
(`time.thread_time`, the thread's own CPU clock), median over `--repeats` runs, for:

- other CPU, idle receiver: a pause between writes lets the receiver go idle, as a client
  waiting for its next event does; each write wakes it on the other CPU;
- same CPU, idle receiver: the same with both on one CPU;
- other CPU, back to back: no pause; the receiver is mostly awake already.

Loopback only; a few seconds.

    python benchmarks/loopback_send.py
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import time

CASES = (
    ("other CPU, idle receiver", True, 0.002),
    ("same CPU, idle receiver", False, 0.002),
    ("other CPU, back to back", True, 0.0),
)


def one_run(sender_cpu: int, receiver_cpu: int, messages: int, size: int, pause: float) -> float:
    """Mean sender CPU µs per write of one run."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        child = os.fork()
        if child == 0:  # the receiver: read until the sender closes
            try:
                os.sched_setaffinity(0, {receiver_cpu})
                conn, _ = server.accept()
                while conn.recv(65536):
                    pass
            finally:
                os._exit(0)
        mask = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {sender_cpu})
        try:
            with socket.create_connection(("127.0.0.1", port)) as conn:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                payload = b"x" * size
                spent = 0.0
                for _ in range(messages):
                    before = time.thread_time()
                    conn.sendall(payload)
                    spent += time.thread_time() - before
                    if pause:
                        time.sleep(pause)
        finally:
            os.sched_setaffinity(0, mask)
            os.waitpid(child, 0)
    return spent / messages * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=1000, help="writes per run (default 1000)")
    parser.add_argument("--size", type=int, default=300, help="bytes per write (default 300, an SSE event)")
    parser.add_argument("--repeats", type=int, default=5, help="runs per case (default 5)")
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit("needs two CPUs")
    print("| case | sender CPU µs per write (median) | runs |")
    print("|---|--:|---|")
    for name, other, pause in CASES:
        receiver = cpus[0] if other else cpus[-1]
        runs = [one_run(cpus[-1], receiver, args.messages, args.size, pause) for _ in range(args.repeats)]
        shown = ", ".join(f"{r:.1f}" for r in runs)
        print(f"| {name} | {statistics.median(runs):.1f} | {shown} |")


if __name__ == "__main__":
    main()
