"""The entry gate's available margin: served without a read while nothing changed, re-read after any change."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from engine.execution.margin import MarginCache


class Account:
    """What the exchange would answer, and how many times it was asked."""

    def __init__(self, margin: str = "1000") -> None:
        self.margin = Decimal(margin)
        self.reads = 0
        self.gate: asyncio.Event | None = None  # set: reads wait for it (a slow exchange)
        self.fail = False

    async def read(self) -> Decimal:
        self.reads += 1
        value = self.margin  # the answer is what the account held when the request was served
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise ConnectionError("exchange down")
        return value


async def test_fresh_value_is_served_without_asking_the_exchange() -> None:
    account = Account()
    cache = MarginCache(account.read, max_age_s=60)
    assert await cache.get() == Decimal(1000) and account.reads == 1
    assert await cache.get() == Decimal(1000) and account.reads == 1


async def test_a_change_makes_the_next_entry_see_the_new_margin() -> None:
    account = Account()
    cache = MarginCache(account.read, max_age_s=60, settle_s=30)  # no background read within the test
    await cache.get()
    account.margin = Decimal(400)  # a fill used margin
    cache.invalidate()
    assert await cache.get() == Decimal(400) and account.reads == 2
    await cache.close()


async def test_the_background_read_after_a_change_keeps_entries_off_the_exchange() -> None:
    account = Account()
    cache = MarginCache(account.read, max_age_s=60, settle_s=0.01)
    await cache.get()
    account.margin = Decimal(250)
    cache.invalidate()
    cache.invalidate()  # a burst of events: one read
    await asyncio.sleep(0.1)
    assert account.reads == 2 and cache.fresh
    assert await cache.get() == Decimal(250) and account.reads == 2
    await cache.close()


async def test_a_read_that_started_before_a_change_is_not_trusted() -> None:
    account = Account()
    cache = MarginCache(account.read, max_age_s=60, settle_s=30)
    account.gate = asyncio.Event()
    early = asyncio.create_task(cache.get())  # reads 1000 ...
    await asyncio.sleep(0.01)
    account.margin = Decimal(300)
    cache.invalidate()  # ... but the account changed while it was under way
    late = asyncio.create_task(cache.get())
    await asyncio.sleep(0.01)
    account.gate.set()
    assert await early == Decimal(1000)
    assert await late == Decimal(300) and account.reads == 2
    assert await cache.get() == Decimal(300) and account.reads == 2
    await cache.close()


async def test_old_values_expire() -> None:
    now = [0.0]
    account = Account()
    cache = MarginCache(account.read, max_age_s=15, clock=lambda: now[0])
    await cache.get()
    now[0] = 14.0
    await cache.get()
    assert account.reads == 1
    now[0] = 16.0
    await cache.get()
    assert account.reads == 2


async def test_an_unreadable_account_raises_so_the_gate_refuses() -> None:
    account = Account()
    account.fail = True
    cache = MarginCache(account.read)
    with pytest.raises(ConnectionError):
        await cache.get()
    account.fail = False
    assert await cache.get() == Decimal(1000)


async def test_kept_fresh_between_signals_without_any_account_event() -> None:
    """Signals minutes apart: the value is re-read in the background before it expires, never at the entry."""
    account = Account()
    cache = MarginCache(account.read, max_age_s=0.3, settle_s=30)
    cache.keep_fresh(0.1)
    await asyncio.sleep(0.05)
    assert account.reads == 1  # read at once
    for _ in range(8):  # 0.8 s: more than twice the age limit, with no event that would trigger a read
        await asyncio.sleep(0.1)
        assert cache.fresh
    reads = account.reads
    assert reads >= 5
    account.margin = Decimal(700)  # unrealised PnL moved it: no event, the next background read sees it
    await asyncio.sleep(0.25)
    before_entry = account.reads
    assert await cache.get() == Decimal(700) and account.reads == before_entry  # the entry waited for nothing
    await cache.close()
    await asyncio.sleep(0.3)
    assert account.reads == before_entry  # closed: no more reads


async def test_keep_fresh_survives_failed_reads() -> None:
    account = Account()
    account.fail = True
    cache = MarginCache(account.read, max_age_s=0.3, settle_s=30)
    cache.keep_fresh(0.05)
    await asyncio.sleep(0.2)
    assert not cache.fresh and account.reads >= 2  # it kept trying, and nothing pretends to know the margin
    account.fail = False
    await asyncio.sleep(0.12)
    assert cache.fresh and await cache.get() == Decimal(1000)
    await cache.close()


def test_keep_fresh_refuses_a_period_that_lets_the_value_expire() -> None:
    cache = MarginCache(Account().read, max_age_s=10)
    with pytest.raises(ValueError):
        cache.keep_fresh(10)
