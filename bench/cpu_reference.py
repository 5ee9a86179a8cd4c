"""How fast this machine runs Python right now: a fixed pure-Python workload, timed on the current core.

On a shared VM the host decides the speed. In session 5 the very same commit measured a tick-to-order p50
of 1.93-2.39 ms in one hour and 3.06-3.71 ms an hour later, and a similar pure-Python workload ran 1.6-1.8
times slower in between. A latency figure is therefore stored with the reference taken just before its run: two
figures compare only when their references are close.

The workload is the kind of work the order path does (small objects, strings, ``Decimal``, JSON), with no
I/O; the best of a few repetitions is reported, in ms (lower is faster).

    .venv/bin/python bench/cpu_reference.py
"""

from __future__ import annotations

import json
import time
from decimal import Decimal

_JSON = json.dumps({"code": 0, "data": {"symbol": "XRP-USDT", "price": "1.35923", "qty": "6107", "side": "BUY"}})


class _Item:
    __slots__ = ("value",)

    def __init__(self, value: int) -> None:
        self.value = value


def _workload() -> int:
    total = 0
    for i in range(40_000):
        total += len(str(i)) + _Item(i).value % 7
    price = Decimal("1.35923")
    amount = Decimal(0)
    for i in range(10_000):
        amount += price * i / 3
    for _ in range(10_000):
        total += len(json.loads(_JSON)["data"])
    return total + int(amount) % 2


def reference_ms(repeats: int = 5) -> float:
    """The best time of ``repeats`` runs of the workload, in ms."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        _workload()
        best = min(best, time.perf_counter() - started)
    return round(best * 1000, 1)


if __name__ == "__main__":
    print(f"CPU reference: {reference_ms()} ms")
