"""Signature verification: the vectors of bingx-protocol.md 3.4, and auth errors over real sockets."""

from __future__ import annotations

import json
import urllib.parse
from decimal import Decimal

import aiohttp
import pytest
import yarl

from engine.market.candle import Candle
from engine.simulator import MarketSpec, SimulatorServer
from engine.simulator.signing import request_params, verify

from tests.simulator_rawclient import RawBingX, build_query, sign

DOC_SECRET = "mheO6dR8ovSsxZQCOYEFCtelpuxcWGTfHw7te326y6jOwq5WpvFQ9JNljoTwBXZGv5It07m9RXSPpDQEK2w"
KEY = "doc-key"

V1_QUERY = "symbol=BTC-USDT&timestamp=1667872120843&side=LONG&leverage=6"
V1_SIG = "4f581ecdb1fa09b9d6e57886b6f70cffed17f82b93399722939e49a38edec2bf"
V1_SORTED = "leverage=6&side=LONG&symbol=BTC-USDT&timestamp=1667872120843"
V1_SORTED_SIG = "feef56d6d6e5c9bbd6d5bcf10743cd993db26cd88d8f9ee4fe9aa8fb49407dff"
V2_QUERY = "recvWindow=5000&symbol=BTC-USDT&timestamp=1700000000000"
V2_SIG = "ad326f8ee127c9c9e130989c0959b9c1690c76d8a00561bfddcd05a16c92d71d"
V3_QUERY = (
    "positionSide=LONG&quantity=0.001&side=BUY&symbol=BTC-USDT&takeProfit=%7B%22type%22%3A%22TAKE_PROFIT_MARKET%22%2C"
    "%22stopPrice%22%3A31968.0%2C%22price%22%3A31968.0%2C%22workingType%22%3A%22MARK_PRICE%22%7D&timestamp=1700000000000&type=MARKET"
)
V3_SIG = "72a13d8ef44c99d30a622cfb24d8cde02a3fe2a8eeeaef5b4b12176f4f19d8e5"
V3_ENCODED_SIG = "232b968fb21d30664364dc83f882bd6e5262bf2c295cc6b8950ddc49922433dd"
V4_QUERY = (
    "positionSide=BOTH&quantity=1&side=BUY&stopLoss=%7B%22stopPrice%22%3A50%2C%22workingType%22%3A%22MARK_PRICE%22%2C"
    "%22type%22%3A%22STOP_MARKET%22%2C%22quantity%22%3A1%7D&symbol=LTC-USDT&takeProfit=%7B%22stopPrice%22%3A150%2C"
    "%22workingType%22%3A%22MARK_PRICE%22%2C%22type%22%3A%22TAKE_PROFIT_MARKET%22%2C%22quantity%22%3A1%7D"
    "&timestamp=1704026482160&type=MARKET"
)
V4_SIG = "cf7e77d2ff39702b99ed4f29e29571255274465ad9be9e88a010163cd81feb55"
V5_SIG = "8d0d3ea9b592be3678c33332ab13e9102e093e67255921e15a581146c87c272f"
V6_SIG = "8b756b01e7a30f02e19c58a91ab01b29528694316b08a51ecb8dd072942bd47d"
V7_SIG = "f8d883609dfd31c824feb4de865b071008dedb1d461451fa70847875c8e7a7a2"


# ---- the verifier on its own ------------------------------------------------------------------
@pytest.mark.parametrize(
    "query, signature",
    [
        (V1_QUERY, V1_SIG),  # unsorted, as sent
        (V1_SORTED, V1_SORTED_SIG),  # the same parameters sorted
        (V2_QUERY, V2_SIG),
        (V3_QUERY, V3_SIG),  # raw JSON signed, encoded in the URL
        (V3_QUERY, V3_ENCODED_SIG),  # variant (b): the encoded form signed
        (V4_QUERY, V4_SIG),
        ("recvWindow=0&symbol=BTC-USDT&timestamp=1696751141337", V7_SIG),
    ],
)
def test_vectors_accepted(query: str, signature: str) -> None:
    check = verify(DOC_SECRET, f"{query}&signature={signature}")
    assert check.present and check.valid


def test_signature_may_sit_anywhere_and_be_upper_case() -> None:
    query = f"signature={V1_SIG.upper()}&{V1_QUERY}"
    assert verify(DOC_SECRET, query).valid


def test_query_plus_form_body_glued_without_ampersand_v6() -> None:
    check = verify(
        DOC_SECRET,
        f"symbol=BTC-USDT&timestamp=1668159715051&signature={V6_SIG}",
        "side=LONG&leverage=6",
        "application/x-www-form-urlencoded",
    )
    assert check.valid


def test_json_body_sorted_v5() -> None:
    body = json.dumps({"timestamp": 1696751141337, "subAccountString": "abc12345", "recvWindow": 0, "signature": V5_SIG})
    assert verify(DOC_SECRET, "", body, "application/json").valid


def test_wrong_secret_and_tampering_rejected() -> None:
    assert not verify("not-the-secret", f"{V1_QUERY}&signature={V1_SIG}").valid
    tampered = V1_QUERY.replace("leverage=6", "leverage=7")
    assert not verify(DOC_SECRET, f"{tampered}&signature={V1_SIG}").valid
    # Order matters: the sorted signature does not validate the unsorted text.
    assert not verify(DOC_SECRET, f"{V1_QUERY}&signature={V1_SORTED_SIG}").valid


def test_strict_mode_accepts_only_the_decoded_query() -> None:
    assert verify(DOC_SECRET, f"{V3_QUERY}&signature={V3_SIG}", strict=True).valid
    assert not verify(DOC_SECRET, f"{V3_QUERY}&signature={V3_ENCODED_SIG}", strict=True).valid


def test_missing_signature_is_reported_as_absent() -> None:
    check = verify(DOC_SECRET, V1_QUERY)
    assert not check.present and not check.valid


def test_plus_is_a_literal_plus() -> None:
    params = request_params("a=1+2&b=%2B&signature=x")
    assert params == {"a": "1+2", "b": "+"}


# ---- over real sockets -------------------------------------------------------------------------
def _flat(symbol: str, price: float, start_ms: int, n: int = 3000) -> MarketSpec:
    base = start_ms - start_ms % 60_000 - 1440 * 60_000
    candles = [Candle(base + i * 60_000, price, price * 1.001, price * 0.999, price, 50.0) for i in range(n)]
    return MarketSpec(symbol, candles)


@pytest.fixture
async def hedge_sim():
    sim = SimulatorServer(
        [_flat("BTC-USDT", 30000.0, 1700000000000), _flat("LTC-USDT", 100.0, 1700000000000)],
        api_key=KEY, api_secret=DOC_SECRET, paused=True, strict_recv_window=False,
        rate_limit_scale=4,  # these tests are about signatures, not request rates
    )
    await sim.start()
    yield sim
    await sim.stop()


async def _raw(session: aiohttp.ClientSession, sim: SimulatorServer, method: str, query: str, key: str = KEY) -> dict:
    url = yarl.URL(f"{sim.rest_url}{query}", encoded=True)  # byte-exact, as the vectors were signed
    async with session.request(method, url, headers={"X-BX-APIKEY": key}) as resp:
        return json.loads(await resp.text())


async def test_vectors_over_the_wire(hedge_sim: SimulatorServer) -> None:
    async with aiohttp.ClientSession() as session:
        body = await _raw(session, hedge_sim, "POST", f"/openApi/swap/v2/trade/leverage?{V1_QUERY}&signature={V1_SIG}")
        assert body["code"] == 0 and body["data"]["leverage"] == 6
        body = await _raw(session, hedge_sim, "GET", f"/openApi/swap/v2/trade/openOrders?{V2_QUERY}&signature={V2_SIG}")
        assert body["code"] == 0 and body["data"] == {"orders": []}
        body = await _raw(session, hedge_sim, "POST", f"/openApi/swap/v2/trade/order?{V3_QUERY}&signature={V3_SIG}")
        assert body["code"] == 0, body
        assert body["data"]["order"]["takeProfit"].startswith('{"type":"TAKE_PROFIT_MARKET"')
        body = await _raw(session, hedge_sim, "POST", f"/openApi/swap/v2/trade/order?{V3_QUERY}&signature={V3_ENCODED_SIG}")
        assert body["code"] == 0, body
        body = await _raw(session, hedge_sim, "POST", f"/openApi/swap/v2/trade/order?{V3_QUERY}&signature={V3_SIG[:-1]}0")
        assert body["code"] == 100001
    orders = hedge_sim.state()["orders"]
    assert sum(1 for o in orders if o["type"] == "MARKET") == 2


async def test_vector_v4_one_way_with_sl_tp() -> None:
    sim = SimulatorServer([_flat("LTC-USDT", 100.0, 1704026482160)], api_key=KEY, api_secret=DOC_SECRET,
                          paused=True, strict_recv_window=False, hedge_mode=False)
    await sim.start()
    try:
        async with aiohttp.ClientSession() as session:
            body = await _raw(session, sim, "POST", f"/openApi/swap/v2/trade/order?{V4_QUERY}&signature={V4_SIG}")
        assert body["code"] == 0, body
        state = sim.state()
        kinds = sorted(o["type"] for o in state["orders"])
        assert kinds == ["MARKET", "STOP_MARKET", "TAKE_PROFIT_MARKET"]
        assert state["positions"][0]["positionSide"] == "BOTH"
    finally:
        await sim.stop()


async def test_form_body_post_is_accepted(hedge_sim: SimulatorServer) -> None:
    """ai-skills style: parameters and signature in an x-www-form-urlencoded body."""
    params = {"symbol": "BTC-USDT", "side": "LONG", "leverage": "9", "timestamp": str(hedge_sim.server_time_ms())}
    raw = "&".join(f"{k}={v}" for k, v in sorted(params.items()))
    body = f"{raw}&signature={sign(DOC_SECRET, raw)}"
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{hedge_sim.rest_url}/openApi/swap/v2/trade/leverage", data=body,
                                headers={"X-BX-APIKEY": KEY, "Content-Type": "application/x-www-form-urlencoded"}) as resp:
            reply = json.loads(await resp.text())
    assert reply["code"] == 0 and reply["data"]["leverage"] == 9


async def test_auth_errors(hedge_sim: SimulatorServer) -> None:
    path = "/openApi/swap/v3/user/balance"
    async with aiohttp.ClientSession() as session:
        client = RawBingX(session, hedge_sim.rest_url, KEY, DOC_SECRET)
        ok = await client.signed("GET", path)
        assert ok.code == 0
        wrong_secret = await client.signed("GET", path, secret="wrong-secret")
        assert wrong_secret.code == 100001
        assert "signature" in wrong_secret.json["msg"].lower()
        bad_key = await client.signed("GET", path, key="someone-else")
        assert bad_key.code == 100413
        ts = await client.server_time()
        no_key = await client.request("GET", f"{path}?{build_query({'timestamp': ts}, DOC_SECRET)}")
        assert no_key.code == 100413
        unsigned = await client.request("GET", f"{path}?timestamp={ts}", headers={"X-BX-APIKEY": KEY})
        assert unsigned.code == 100412
        no_ts = await client.request("GET", f"{path}?{build_query({'recvWindow': 5000}, DOC_SECRET)}", headers={"X-BX-APIKEY": KEY})
        assert no_ts.code == 100421


async def test_stale_and_future_timestamps_rejected_in_strict_mode() -> None:
    sim = SimulatorServer([_flat("BTC-USDT", 30000.0, 1700000000000)], api_key=KEY, api_secret=DOC_SECRET,
                          paused=True, speed=1.0)
    await sim.start()
    try:
        assert not sim.strict_recv_window  # paused: relaxed by default ...
        sim.resume()
        assert sim.strict_recv_window  # ... running at speed 1: strict
        sim.pause()  # keep server time still while we compute offsets from it
        sim.strict_recv_window = True
        async with aiohttp.ClientSession() as session:
            client = RawBingX(session, sim.rest_url, KEY, DOC_SECRET)
            now = await client.server_time()
            path = "/openApi/swap/v3/user/balance"
            assert (await client.signed("GET", path, timestamp=now - 4_000)).code == 0
            assert (await client.signed("GET", path, timestamp=now - 6_000)).code == 100421
            assert (await client.signed("GET", path, {"recvWindow": 10_000}, timestamp=now - 6_000)).code == 0
            assert (await client.signed("GET", path, timestamp=now + 5_000)).code == 100421
    finally:
        await sim.stop()


async def test_relaxed_window_at_other_speeds() -> None:
    sim = SimulatorServer([_flat("BTC-USDT", 30000.0, 1700000000000)], api_key=KEY, api_secret=DOC_SECRET,
                          paused=True, speed=10.0)
    await sim.start()
    try:
        assert not sim.strict_recv_window
        async with aiohttp.ClientSession() as session:
            client = RawBingX(session, sim.rest_url, KEY, DOC_SECRET)
            now = await client.server_time()
            path = "/openApi/swap/v3/user/balance"
            assert (await client.signed("GET", path, timestamp=now - 3_600_000)).code == 0
            garbage = urllib.parse.quote("soon")
            ts_bad = await client.request(
                "GET", f"{path}?timestamp={garbage}&signature={sign(DOC_SECRET, 'timestamp=soon')}", headers={"X-BX-APIKEY": KEY}
            )
            assert ts_bad.code == 100421
    finally:
        await sim.stop()


async def test_listen_key_accepts_unsigned_and_signed(hedge_sim: SimulatorServer) -> None:
    async with aiohttp.ClientSession() as session:
        client = RawBingX(session, hedge_sim.rest_url, KEY, DOC_SECRET)
        unsigned = await client.request("POST", "/openApi/user/auth/userDataStream", headers={"X-BX-APIKEY": KEY})
        assert unsigned.status == 200 and len(unsigned.json["listenKey"]) == 64
        signed = await client.signed("POST", "/openApi/user/auth/userDataStream")
        assert signed.status == 200 and "listenKey" in signed.json and "code" not in signed.json
        wrong = await client.signed("POST", "/openApi/user/auth/userDataStream", secret="nope")
        assert wrong.code == 100001
        no_key = await client.request("POST", "/openApi/user/auth/userDataStream")
        assert no_key.code == 100413
    assert Decimal(hedge_sim.state()["account"]["wallet"]) == Decimal("10000")
