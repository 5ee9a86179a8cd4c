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
    exponent = Decimal(repr(value)).normalize().as_tuple().exponent
    assert isinstance(exponent, int)
    return min(max(0, -exponent), _MAX_DECIMALS)


def contract_from_candles(candles: Sequence[Candle], *, sample: int = 20_000) -> ContractRules:
    """Rules from the decimals of up to ``sample`` evenly spaced candles (the whole file when smaller)."""
    if not candles:
        raise ValueError("cannot derive contract rules from an empty candle list")
    stride = max(1, len(candles) // sample)
    price_decimals = 0
    qty_decimals = 0
    for candle in candles[::stride]:
        price_decimals = max(
            price_decimals,
            _decimals(candle.open),
            _decimals(candle.high),
            _decimals(candle.low),
            _decimals(candle.close),
        )
        qty_decimals = max(qty_decimals, _decimals(candle.volume))
    step = Decimal(1).scaleb(-qty_decimals)
    return ContractRules(
        qty_step=step,
        min_qty=step,
        min_notional=MIN_NOTIONAL,
        price_tick=Decimal(1).scaleb(-price_decimals),
    )
