"""Signing: the protocol notes' test vectors (section 3.4) and the ccxt fixture URLs."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from urllib.parse import quote, unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.exchange.bingx.models import OrderType, Side
from engine.exchange.bingx.orders import OrderRequest, TriggerSpec
from engine.exchange.bingx.signing import (
    SigningValueError,
    canonical_string,
    compact_json,
    encode_value,
    sign,
    sign_params,
    to_wire,
)
from engine.exchange.bingx.urls import (
    PROD_REST_URL,
    PROD_WS_URL,
    VST_REST_URL,
    VST_WS_URL,
    account_stream_url,
    resolve_urls,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SECRET = "mheO6dR8ovSsxZQCOYEFCtelpuxcWGTfHw7te326y6jOwq5WpvFQ9JNljoTwBXZGv5It07m9RXSPpDQEK2w"
TP_JSON = '{"type":"TAKE_PROFIT_MARKET","stopPrice":31968.0,"price":31968.0,"workingType":"MARK_PRICE"}'


def test_v1_official_unsorted_vector() -> None:
    params = [("symbol", "BTC-USDT"), ("timestamp", 1667872120843), ("side", "LONG"), ("leverage", 6)]
    signed = sign_params(params, SECRET, sort=False)
    assert signed.raw == "symbol=BTC-USDT&timestamp=1667872120843&side=LONG&leverage=6"
    assert signed.signature == "4f581ecdb1fa09b9d6e57886b6f70cffed17f82b93399722939e49a38edec2bf"
    assert signed.query == (
        "symbol=BTC-USDT&timestamp=1667872120843&side=LONG&leverage=6"
        "&signature=4f581ecdb1fa09b9d6e57886b6f70cffed17f82b93399722939e49a38edec2bf")
    # Same parameters sorted (what the client actually sends).
    assert sign_params(dict(params), SECRET).signature == (
        "feef56d6d6e5c9bbd6d5bcf10743cd993db26cd88d8f9ee4fe9aa8fb49407dff")


def test_v2_sorted_get_open_orders() -> None:
    signed = sign_params({"symbol": "BTC-USDT", "recvWindow": 5000, "timestamp": 1700000000000}, SECRET)
    assert signed.raw == "recvWindow=5000&symbol=BTC-USDT&timestamp=1700000000000"
    assert signed.signature == "ad326f8ee127c9c9e130989c0959b9c1690c76d8a00561bfddcd05a16c92d71d"
    assert signed.query == ("recvWindow=5000&symbol=BTC-USDT&timestamp=1700000000000"
                            "&signature=ad326f8ee127c9c9e130989c0959b9c1690c76d8a00561bfddcd05a16c92d71d")


def test_v3_json_take_profit_raw_signed_value_encoded() -> None:
    params = {"symbol": "BTC-USDT", "side": "BUY", "positionSide": "LONG", "type": "MARKET", "quantity": "0.001",
              "takeProfit": TP_JSON, "timestamp": 1700000000000}
    signed = sign_params(params, SECRET)
    assert signed.raw == ("positionSide=LONG&quantity=0.001&side=BUY&symbol=BTC-USDT&takeProfit=" + TP_JSON
                          + "&timestamp=1700000000000&type=MARKET")
    assert signed.signature == "72a13d8ef44c99d30a622cfb24d8cde02a3fe2a8eeeaef5b4b12176f4f19d8e5"
    assert signed.query == (
        "positionSide=LONG&quantity=0.001&side=BUY&symbol=BTC-USDT&takeProfit=%7B%22type%22%3A%22TAKE_PROFIT_MARKET"
        "%22%2C%22stopPrice%22%3A31968.0%2C%22price%22%3A31968.0%2C%22workingType%22%3A%22MARK_PRICE%22%7D"
        "&timestamp=1700000000000&type=MARKET&signature=72a13d8ef44c99d30a622cfb24d8cde02a3fe2a8eeeaef5b4b12176f4f19d8e5")
    # Variant (b) of the notes: HMAC over the encoded remainder.
    assert sign(signed.query.rsplit("&signature=", 1)[0], SECRET) == (
        "232b968fb21d30664364dc83f882bd6e5262bf2c295cc6b8950ddc49922433dd")


def test_v3_built_from_an_order_request() -> None:
    req = OrderRequest(symbol="BTC-USDT", side="BUY", position_side="LONG", type="MARKET",
                       quantity=Decimal("0.001"),
                       take_profit=TriggerSpec("TAKE_PROFIT_MARKET", Decimal("31968.0"), price=Decimal("31968.0")))
    params = req.to_params() | {"timestamp": 1700000000000}
    assert sign_params(params, SECRET).signature == "72a13d8ef44c99d30a622cfb24d8cde02a3fe2a8eeeaef5b4b12176f4f19d8e5"


def test_v4_attached_sl_tp_matches_ccxt_fixture_query() -> None:
    sl = '{"stopPrice":50,"workingType":"MARK_PRICE","type":"STOP_MARKET","quantity":1}'
    tp = '{"stopPrice":150,"workingType":"MARK_PRICE","type":"TAKE_PROFIT_MARKET","quantity":1}'
    params = {"positionSide": "BOTH", "quantity": 1, "side": "BUY", "stopLoss": sl, "symbol": "LTC-USDT",
              "takeProfit": tp, "timestamp": 1704026482160, "type": "MARKET"}
    signed = sign_params(params, SECRET)
    assert signed.signature == "cf7e77d2ff39702b99ed4f29e29571255274465ad9be9e88a010163cd81feb55"
    fixture = json.loads((SHARED / "data/ccxt-bingx-static/request.json").read_text())
    url = next(c["url"] for c in fixture["methods"]["createOrder"]
               if c["description"] == "Swap order with attached tp and sl")
    assert signed.query.rsplit("&signature=", 1)[0] == url.split("?", 1)[1].rsplit("&signature=", 1)[0]


@pytest.mark.parametrize(("raw", "expected"), [
    ("recvWindow=0&subAccountString=abc12345&timestamp=1696751141337",
     "8d0d3ea9b592be3678c33332ab13e9102e093e67255921e15a581146c87c272f"),  # V5
    ("symbol=BTC-USDT&timestamp=1668159715051side=LONG&leverage=6",
     "8b756b01e7a30f02e19c58a91ab01b29528694316b08a51ecb8dd072942bd47d"),  # V6
    ("recvWindow=0&symbol=BTC-USDT&timestamp=1696751141337",
     "f8d883609dfd31c824feb4de865b071008dedb1d461451fa70847875c8e7a7a2"),  # V7
    ("timestamp=1700000000000", "b3efb34f2df51eea2b0e489324ea4aabc84cfbea7f9db9f6fa4bdfc70c589b6d"),  # listenKey
])
def test_extra_reference_vectors(raw: str, expected: str) -> None:
    assert sign(raw, SECRET) == expected


def test_every_swap_fixture_url_value_is_encoded_like_ours() -> None:
    """For each ccxt swap request URL, decoding then re-encoding every value gives the same bytes."""
    fixture = json.loads((SHARED / "data/ccxt-bingx-static/request.json").read_text())
    checked = 0
    for cases in fixture["methods"].values():
        for case in cases:
            url = case.get("url", "")
            if "/openApi/swap/" not in url or "?" not in url:
                continue
            for pair in url.split("?", 1)[1].split("&"):
                key, _, value = pair.partition("=")
                if key == "signature" or "%5B" in key:  # ccxt's disabled nested-bracket form
                    continue
                assert encode_value(unquote(value)) == value, (case["description"], key)
                checked += 1
    assert checked > 200


def test_wire_values_and_compact_json() -> None:
    assert to_wire(True) == "true" and to_wire(False) == "false"
    assert to_wire(Decimal("1E-7")) == "0.0000001"
    assert to_wire(Decimal("31968.0")) == "31968.0"
    assert compact_json({"a": [1, Decimal("2.50")], "b": "x\"y"}) == '{"a":[1,2.50],"b":"x\\"y"}'
    # the exact-type shortcuts (str, Decimal, int) leave subclasses to the general rules: enums by value, bool as a word
    assert to_wire(Side.BUY) == "BUY" and to_wire(7) == "7" and to_wire("BTC-USDT") == "BTC-USDT"
    assert compact_json({"type": OrderType.STOP_MARKET, "on": True, "n": 3}) == '{"type":"STOP_MARKET","on":true,"n":3}'
    assert canonical_string({"b": 1, "a": None, "c": "z"}) == "b=1&c=z"  # None dropped, sorted
    assert encode_value("MØTH-USDT") == "M%C3%98TH-USDT"  # UTF-8 bytes percent-encoded
    for bad in ("a&b", "a=b", "a#b", "a?b", "a\nb"):
        with pytest.raises(SigningValueError):
            to_wire(bad)


def test_signed_query_repr_hides_signature() -> None:
    signed = sign_params({"timestamp": 1}, SECRET)
    assert signed.signature not in repr(signed)


def test_urls_prod_vst_and_overrides() -> None:
    assert resolve_urls(False) == (PROD_REST_URL, PROD_WS_URL)
    assert resolve_urls(True) == (VST_REST_URL, VST_WS_URL)
    assert resolve_urls(True, "http://127.0.0.1:1/", "ws://127.0.0.1:1/swap-market") == (
        "http://127.0.0.1:1", "ws://127.0.0.1:1/swap-market")
    assert account_stream_url("wss://h/swap-market", "abc") == "wss://h/swap-market?listenKey=abc"
    assert account_stream_url("ws://h/x?a=1", "k") == "ws://h/x?a=1&listenKey=k"


@given(st.text())
def test_percent_encoding_is_exactly_quote_with_nothing_safe(text: str) -> None:
    """The fast encoder (issue 10) must produce the very bytes ``quote(text, safe="")`` does, or signatures break."""
    try:
        expected = quote(text, safe="")
    except UnicodeEncodeError:  # lone surrogates cannot be sent at all
        with pytest.raises(UnicodeEncodeError):
            encode_value(text)
        return
    assert encode_value(text) == expected


@given(st.text())
def test_json_strings_match_the_escaping_rules(text: str) -> None:
    """Quote, backslash and control characters escaped, everything else as it is (the fast path included)."""
    encoded = compact_json(text)
    assert json.loads(encoded) == text
    assert all(ord(ch) >= 0x20 for ch in encoded)
