"""Garbage-collector settings for streamtap's long-running servers: the proxy and the fake upstream.

CPython's cyclic collector stops the whole process while it traverses a generation. In a
server under load that pause lands on every stream at once: with the defaults, the proxy at 200
concurrent streams spent 6-11 ms of every second in collections, full ones of up to 49 ms
among them (docs/benchmarks.md, "Garbage-collection pauses").

- `gc.freeze()` once started moves everything alive then (modules, configuration, caches)
  to the permanent generation, which collections no longer traverse. Those objects live as
  long as the process; anything of them freed later is still freed by reference counting.
- A young-generation threshold of 10,000 net allocations instead of 700 makes collections
  ~15x rarer. Objects without reference cycles are freed by reference counting either way;
  the cost is that cyclic garbage may wait for up to 10,000 allocations instead of 700.

Both hold only while a served request leaves no reference cycle behind
(tests/engine/test_reference_cycles.py). One left per request makes each young collection
long (10-34 ms at 200 streams), and what survives one is found only by the middle
generation's, every tenth: 120-ms pauses, which set the proxy's added TTFT at p99.
"""

from __future__ import annotations

import gc
from typing import Final

GEN0_THRESHOLD: Final = 10_000


def settle_for_serving() -> None:
    """Freeze the start-up heap and make young collections rarer; call once, when serving starts."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
