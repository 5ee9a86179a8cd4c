"""BingxRestClient against a local BingX fake on 127.0.0.1 (tests/bingx_fakes.py)."""

from __future__ import annotations

import asyncio
import logging
import time
from decimal import Decimal
from typing import Any, AsyncIterator

import pytest

from engine.exchange.bingx.errors import (
    BingxAuthError,
    BingxSignatureError,
    BingxTimestampError,
    OrderStateUnknownError,
    OrderValidationError,
    plain_words,
)
from engine.exchange.bingx.models import OrderStatus
from engine.exchange.bingx.orders import OrderRequest, TriggerSpec, new_client_order_id
from engine.exchange.bingx.ratelimit import Budget, RateLimiter
from engine.exchange.bingx.rest import BingxRestClient

from tests.bingx_fakes import API_KEY, API_SECRET, FakeBingx

PLACE = "/openApi/swap/v2/trade/order"


@pytest.fixture
async def fake() -> AsyncIterator[FakeBingx]:
    async with FakeBingx() as server:
        yield server


def make_client(fake: FakeBingx, **overrides: Any) -> BingxRestClient:
    kwargs: dict[str, Any] = dict(rest_url=fake.rest_url, api_key=API_KEY, api_secret=API_SECRET,
                                  order_lookup_delay_s=0.05, backoff_base_s=0.02, request_timeout_s=2.0)
    kwargs.update(overrides)
    return BingxRestClient(**kwargs)


def buy(cid: str | None = None, qty: str = "0.0100", **kw: Any) -> OrderRequest:
    return OrderRequest(symbol="BTC-USDT", side="BUY", position_side="LONG", type="LIMIT", quantity=Decimal(qty),
                        price=Decimal("49000.04"), client_order_id=cid or new_client_order_id("t"), **kw)


async def test_public_and_signed_calls_round_trip(fake: FakeBingx) -> None:
    async with make_client(fake) as client:
        assert abs(await client.server_time() - time.time() * 1000) < 5000
        book = await client.depth("BTC-USDT", 5)
        assert [p for p, _ in book.asks] == [Decimal("50000.1"), Decimal("50000.2")]  # sorted best-first
        (bal,) = await client.balance()
        assert bal.equity == Decimal("1001.5000")
        (pos,) = await client.positions("BTC-USDT")
        assert pos.liquidation_price == Decimal("41000.5") and pos.position_id == "1900000000000000007"
        assert await client.get_position_mode() is True
    signed = [r for r in fake.requests if r.signed_ok is not None]
    assert signed and all(r.signed_ok for r in signed)
    assert all("timestamp" in r.params and r.params["recvWindow"] == "5000" for r in signed)


async def test_wrong_secret_is_rejected_with_100001_as_a_signature_error(fake: FakeBingx,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wrong_secret = "not-the-secret-XYZ123"
    async with make_client(fake, api_secret=wrong_secret) as client:
        with pytest.raises(BingxSignatureError) as info:
            await client.balance()
    err = info.value
    assert err.code == 100001 and err.retryable is False
    assert len(fake.calls("/user/balance")) == 1  # never retried
    assert fake.calls("/user/balance")[0].answer_code == 100001
    text = str(err) + " ".join(r.getMessage() for r in caplog.records)
    assert wrong_secret not in text and API_KEY not in text
    assert "API secret is wrong" in plain_words(err)


async def test_unknown_api_key_gives_auth_error_in_plain_words(fake: FakeBingx) -> None:
    async with make_client(fake, api_key="someone-else") as client:
        with pytest.raises(BingxAuthError) as info:
            await client.positions()
    assert info.value.code == 100413
    assert "does not recognise the API key" in plain_words(info.value)
    assert "someone-else" not in str(info.value)


async def test_clock_skew_is_recovered_via_100421_resync_and_one_retry(fake: FakeBingx) -> None:
    async with make_client(fake) as client:
        await client.balance()  # first signed call syncs the clock
        assert abs(client.time.offset_ms) < 1000
        fake.clock_offset_ms = 60_000  # BingX's clock jumps a minute ahead of ours
        (bal,) = await client.balance()
        assert bal.asset == "USDT"
        assert 59_000 < client.time.offset_ms < 61_000
    answers = [r.answer_code for r in fake.calls("/user/balance")]
    assert answers == [0, 100421, 0]  # exactly one retry, after a resync
    assert len(fake.calls("/server/time")) == 2


async def test_persistent_timestamp_error_is_retried_only_once(fake: FakeBingx) -> None:
    fake.switches.server_time_lie_ms = 30_000  # the clock we sync to is not the one that checks
    async with make_client(fake) as client:
        with pytest.raises(BingxTimestampError):
            await client.balance()
    assert [r.answer_code for r in fake.calls("/user/balance")] == [100421, 100421]


async def test_burst_of_200_concurrent_calls_never_exceeds_the_budget(fake: FakeBingx) -> None:
    """200 concurrent market-data calls on two endpoints sharing one group budget of 25 per 0.5 s."""
    limit, window = 25, 0.5
    fake.switches.budget = (limit, window)
    fake.switches.budget_paths = frozenset({"/openApi/swap/v1/ticker/price", "/openApi/swap/v2/quote/depth"})
    limiter = RateLimiter(guard_s=0.02)
    limiter.configure("ip:group1", [Budget(limit, window)])
    async with make_client(fake, rate_limiter=limiter) as client:
        started = time.monotonic()
        results = await asyncio.gather(*(client.ticker_price("BTC-USDT") if i % 2 else client.depth("BTC-USDT")
                                         for i in range(200)))
        elapsed = time.monotonic() - started
    assert len(results) == 200
    assert fake.rate_limited == 0  # the server never had to refuse one
    assert fake.max_in_window <= limit  # measured on arrival at the server
    assert elapsed >= (200 / limit - 1) * window  # it really was throttled, not lucky


@pytest.mark.parametrize("http_status", [200, 429])
async def test_rate_limit_answer_blocks_until_window_reset_and_logs(fake: FakeBingx, caplog: pytest.LogCaptureFixture,
                                                                    http_status: int) -> None:
    async with make_client(fake) as client:
        await client.balance()  # clock sync first so only the positions calls meet the limit
        fake.switches.rate_limit_answers = 1
        fake.switches.rate_limit_http_status = http_status
        fake.switches.rate_limit_expire_ms = 400
        positions = await client.positions()
    assert positions
    calls = fake.calls("/user/positions")
    assert [r.answer_code for r in calls] == [100410, 0]
    assert calls[1].at - calls[0].at >= 0.38  # waited for the window to reset
    assert any("rate limit" in r.getMessage() and "until the window resets" in r.getMessage()
               for r in caplog.records)


async def test_reads_retry_5xx_with_backoff(fake: FakeBingx) -> None:
    fake.switches.fail_reads_503 = 2
    async with make_client(fake) as client:
        assert await client.positions()
    assert len(fake.calls("/user/positions")) == 3


@pytest.mark.parametrize("mode", ["timeout", "disconnect"])
async def test_lost_placement_response_ends_with_exactly_one_order(fake: FakeBingx, mode: str) -> None:
    fake.switches.lose_place_responses = 1
    fake.switches.lose_mode = mode
    fake.switches.lose_sleep_s = 1.5
    cid = new_client_order_id("lost")
    async with make_client(fake, request_timeout_s=0.5) as client:
        order = await client.place_order(buy(cid))
    assert order.client_order_id == cid and order.status is OrderStatus.NEW
    assert len(fake.orders) == 1 and fake.orders[cid]["orderId"] == int(order.order_id)
    assert len(fake.calls(PLACE, "POST")) == 1  # looked up, never resent
    assert fake.calls(PLACE, "GET")[0].params["clientOrderId"] == cid


async def test_confirmed_absence_allows_one_resend_with_the_same_id(fake: FakeBingx) -> None:
    fake.switches.fail_place_unstored = 1
    cid = new_client_order_id("abs")
    async with make_client(fake) as client:
        order = await client.place_order(buy(cid))
    posts = fake.calls(PLACE, "POST")
    assert len(posts) == 2 and {p.params["clientOrderId"] for p in posts} == {cid}
    assert list(fake.orders) == [cid] and order.order_id == str(fake.orders[cid]["orderId"])


async def test_absent_after_the_one_resend_raises_state_unknown(fake: FakeBingx) -> None:
    fake.switches.fail_place_unstored = 5
    async with make_client(fake) as client:
        with pytest.raises(OrderStateUnknownError) as info:
            await client.place_order(buy())
    assert len(fake.calls(PLACE, "POST")) == 2  # never a third send
    assert not fake.orders and info.value.retryable is False


async def test_reused_client_id_returns_the_existing_order(fake: FakeBingx) -> None:
    cid = new_client_order_id("dup")
    async with make_client(fake) as client:
        first = await client.place_order(buy(cid))
        second = await client.place_order(buy(cid))
    assert second.order_id == first.order_id and len(fake.orders) == 1


async def test_order_is_rounded_and_sl_sent_as_compact_json(fake: FakeBingx) -> None:
    req = buy(qty="0.012345", stop_loss=TriggerSpec("STOP_MARKET", Decimal("48000.06")))
    async with make_client(fake) as client:
        order = await client.place_order(req)
    sent = fake.calls(PLACE, "POST")[0].params
    assert (sent["quantity"], sent["price"]) == ("0.0123", "49000.0")
    assert sent["stopLoss"] == '{"type":"STOP_MARKET","stopPrice":48000.1,"workingType":"MARK_PRICE"}'
    assert order.stop_loss is not None and order.stop_loss.stop_price == Decimal("48000.1")


async def test_orders_below_minimums_are_refused_locally(fake: FakeBingx) -> None:
    async with make_client(fake) as client:
        with pytest.raises(OrderValidationError, match=r"below the minimum 0\.0001 BTC"):
            await client.place_order(buy(qty="0.00005"))
        market = OrderRequest(symbol="BTC-USDT", side="BUY", position_side="LONG", type="MARKET",
                              quantity=Decimal("0.0001"), client_order_id="m1")
        with pytest.raises(OrderValidationError, match="minimum 2 USDT"):
            await client.place_order(market, reference_price=Decimal("10000"))
        with pytest.raises(OrderValidationError, match="client_order_id"):
            await client.place_order(buy(cid="UPPER-case"))
    assert fake.calls(PLACE, "POST") == []  # nothing reached the exchange


async def test_query_order_returns_none_when_the_exchange_has_no_such_order(fake: FakeBingx) -> None:
    async with make_client(fake) as client:
        assert await client.query_order("BTC-USDT", client_order_id="neverplaced1") is None


async def test_klines_range_paginates_newest_first_capped_pages_and_gaps(fake: FakeBingx) -> None:
    fake.switches.klines_cap = 700  # the server silently returns fewer rows than asked, newest first
    step = 60_000
    start = fake.kline_start_ms + 100 * step
    end = start + 5000 * step
    fake.kline_gap = (start + 2000 * step, start + 2010 * step)  # ten candles BingX never had
    async with make_client(fake) as client:
        candles = await client.klines_range("BTC-USDT", "1m", start, end)
    times = [k.open_time_ms for k in candles]
    expected = [t for t in range(start, end, step) if not fake.kline_gap[0] <= t < fake.kline_gap[1]]
    assert times == expected  # ascending, complete, no duplicates, nothing outside [start, end)
    assert len(fake.calls("/quote/klines")) < 20
    assert candles[0].to_candle().open_time_ms == start
