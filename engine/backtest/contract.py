"""Contract rules for a backtest, derived from the data file.

Candle files carry no exchange metadata, so (documented in the README): the price tick is one
unit of the most precise price decimal seen, the quantity step one unit of the most precise
volume decimal seen, the minimum quantity one step, and the minimum notional 2 units of the
quote currency (BingX's ~2 USDT). Balance and notional are in the file's quote currency.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Sequence

from engine.market.candle import Candle
from engine.trading.sizing import ContractRules

MIN_NOTIONAL = Decimal(2)
_MAX_DECIMALS = 12


def _decimals(value: float) -> int:
    text = repr(value)
    if "e" not in text and "n" not in text:  # plain "123.4500" (not 1e-05, inf or nan): count the digits
        return min(len(text.partition(".")[2].rstrip("0")), _MAX_DECIMALS)
    exponent = Decimal(text).normalize().as_tuple().exponent
    assert isinstance(exponent, int)
    return min(max(0, -exponent), _MAX_DECIMALS)


def contract_from_candles(candles: Sequence[Candle], *, sample: int = 20_000) -> ContractRules:
    """Rules from the decimals of up to ``sample`` evenly spaced candles (the whole file when smaller)."""
    if not candles:
        raise ValueError("cannot derive contract rules from an empty candle list")
    stride = max(1, len(candles) // sample)
    # each distinct value once: prices repeat a lot
    prices: set[float] = set()
    volumes: set[float] = set()
    for candle in candles[::stride]:
        prices.update((candle.open, candle.high, candle.low, candle.close))
        volumes.add(candle.volume)
    price_decimals = max(map(_decimals, prices))
    qty_decimals = max(map(_decimals, volumes))
    step = Decimal(1).scaleb(-qty_decimals)
    return ContractRules(
        qty_step=step,
        min_qty=step,
        min_notional=MIN_NOTIONAL,
        price_tick=Decimal(1).scaleb(-price_decimals),
    )
