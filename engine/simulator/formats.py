"""BingX response and push shapes, built from the simulator's state.

Field names, spellings and JSON types follow ``bingx-protocol.md`` 4.x/9.x and the raw
bodies recorded in ``shared/data/ccxt-bingx-static/response.json``: the place-order echo
spells ``clientOrderID`` and echoes ``stopLoss``/``takeProfit`` as JSON strings with
numeric price/quantity; query objects spell ``clientOrderId`` and give SL/TP as objects;
REST says ``CANCELLED``, WebSocket ``CANCELED``; resting limit orders are ``PENDING``;
balances use ``realisedProfit``/``freezedMargin``; ids are unquoted integers except
``positionId`` (a string in every recorded sample).
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from .accounts import ZERO, Income, Position
from .markets import Market
from .protocol import fmt_dec, fmt_money, num

if TYPE_CHECKING:  # pragma: no cover
    from .matching import Fill, MatchingEngine, Order, TpSl

WS_STATUS = {"PENDING": "NEW", "CANCELLED": "CANCELED"}


def fmt_price(value: Decimal, pp: int) -> str:
    """A price that may not sit on the tick (averages): exact to pp+4 decimals, at least pp shown."""
    text = format(value.quantize(Decimal(1).scaleb(-(pp + 4))), "f")
    if "." in text:
        whole, frac = text.split(".")
        frac = frac.rstrip("0").ljust(pp, "0")
        text = f"{whole}.{frac}" if frac else whole
    return text


def _qty(market: Market, qty: Decimal) -> str:
    return fmt_dec(qty.quantize(market.step)) if qty == qty.quantize(market.step) else fmt_dec(qty)


def _px(market: Market, price: Decimal) -> str:
    return fmt_dec(price.quantize(market.tick)) if price == price.quantize(market.tick) else fmt_price(price, market.pp)


# ---- orders -----------------------------------------------------------------------------------
def _tpsl_object(spec: TpSl | None) -> dict[str, Any]:
    if spec is None:
        return {"type": "", "quantity": 0, "stopPrice": 0, "price": 0, "workingType": "", "stopGuaranteed": ""}
    return {
        "type": spec.type,
        "quantity": num(spec.quantity) if spec.quantity is not None else 0,
        "stopPrice": num(spec.stop_price),
        "price": num(spec.price),
        "workingType": spec.working_type,
        "stopGuaranteed": spec.stop_guaranteed,
    }


def order_echo(order: Order, market: Market) -> dict[str, Any]:
    """The ``order`` object of a place-order response."""
    return {
        "orderId": order.order_id,
        "symbol": order.symbol,
        "positionSide": order.position_side,
        "side": order.side,
        "type": order.type,
        "price": num(order.price),
        "quantity": num(order.qty),
        "stopPrice": num(order.stop_price),
        "workingType": order.working_type,
        "clientOrderID": order.client_order_id,
        "timeInForce": order.time_in_force,
        "priceRate": 0,
        "stopLoss": order.stop_loss.raw if order.stop_loss else "",
        "takeProfit": order.take_profit.raw if order.take_profit else "",
        "reduceOnly": order.reduce_only,
        "activationPrice": 0,
        "closePosition": "true" if order.close_position else "",
        "stopGuaranteed": "",
        "status": order.status,
        "avgPrice": fmt_price(order.avg_price, market.pp),
        "executedQty": _qty(market, order.executed),
    }


def order_object(order: Order, market: Market, *, one_way: bool) -> dict[str, Any]:
    """An order as query, cancel and list endpoints return it."""
    return {
        "symbol": order.symbol,
        "orderId": order.order_id,
        "side": order.side,
        "positionSide": order.position_side,
        "type": order.type,
        "origQty": _qty(market, order.qty),
        "price": _px(market, order.price),
        "executedQty": _qty(market, order.executed),
        "avgPrice": fmt_price(order.avg_price, market.pp),
        "cumQuote": fmt_money(order.cum_quote),
        "stopPrice": _px(market, order.stop_price) if order.stop_price else "",
        "profit": fmt_money(order.profit),
        "commission": fmt_money(order.commission),
        "status": order.status,
        "time": order.time_ms,
        "updateTime": order.update_time_ms,
        "clientOrderId": order.client_order_id,
        "leverage": f"{order.leverage}X",
        "takeProfit": _tpsl_object(order.take_profit),
        "stopLoss": _tpsl_object(order.stop_loss),
        "advanceAttr": 0,
        "positionID": order.position_id,
        "takeProfitEntrustPrice": 0,
        "stopLossEntrustPrice": 0,
        "orderType": "",
        "workingType": order.working_type,
        "onlyOnePosition": one_way,
        "reduceOnly": order.reduce_only or order.closing,
        "postOnly": order.time_in_force == "PostOnly",
        "stopGuaranteed": "false",
        "triggerOrderId": order.parent_id,
        "trailingStopRate": 0,
        "trailingStopDistance": 0,
        "closePosition": order.close_position,
        "priceRate": 0,
        "isTwap": False,
        "mainOrderId": 0,
    }


def fill_order_object(fill: Fill, market: Market, *, one_way: bool) -> dict[str, Any]:
    """A row of ``/trade/allFillOrders``."""
    dt = datetime.fromtimestamp(fill.time_ms / 1000, tz=timezone.utc)
    return {
        "filledTm": dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "volume": _qty(market, fill.qty),
        "price": _px(market, fill.price),
        "amount": fmt_money(fill.quote),
        "commission": fmt_money(fill.commission),
        "currency": "USDT",
        "orderId": str(fill.order_id),
        "liquidatedPrice": _px(market, fill.price) if fill.liquidation else "",
        "liquidatedMarginRatio": "",
        "filledTime": dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{fill.time_ms % 1000:03d}+0000",
        "clientOrderID": fill.client_order_id,
        "symbol": fill.symbol,
        "onlyOnePosition": one_way,
    }


def fill_history_object(fill: Fill, market: Market) -> dict[str, Any]:
    """A row of ``/trade/fillHistory`` (fields UNCONFIRMED upstream; these are the useful ones)."""
    return {
        "symbol": fill.symbol,
        "orderId": fill.order_id,
        "tradeId": fill.trade_id,
        "side": fill.side,
        "positionSide": fill.position_side,
        "price": _px(market, fill.price),
        "qty": _qty(market, fill.qty),
        "quoteQty": fmt_money(fill.quote),
        "commission": fmt_money(fill.commission),
        "commissionAsset": "USDT",
        "realizedPnl": fmt_money(fill.realized_pnl),
        "role": "maker" if fill.maker else "taker",
        "filledTime": fill.time_ms,
        "clientOrderId": fill.client_order_id,
    }


# ---- account ----------------------------------------------------------------------------------
def position_object(pos: Position, engine: MatchingEngine) -> dict[str, Any]:
    """A row of ``/user/positions``."""
    market = engine.markets[pos.symbol]
    mark = engine.mark(pos.symbol)
    upnl = pos.unrealized(mark)
    margin = pos.initial_margin()
    value = mark * pos.size
    maintenance = value * market.mmr
    equity = margin + upnl if pos.isolated else engine.account.wallet - engine.account.isolated_margin_total() + engine.cross_unrealized()
    risk = (maintenance / equity) if equity > 0 else Decimal(1)
    return {
        "positionId": str(pos.position_id),
        "symbol": pos.symbol,
        "currency": "USDT",
        # Positive in hedge mode; signed (negative = short) for a one-way BOTH position.
        "positionAmt": _qty(market, pos.amount),
        "availableAmt": _qty(market, pos.amount),
        "positionSide": pos.side,
        "isolated": pos.isolated,
        "avgPrice": fmt_price(pos.entry_price, market.pp),
        "initialMargin": fmt_money(margin),
        "margin": fmt_money(margin),
        "leverage": pos.leverage,
        "unrealizedProfit": fmt_money(upnl),
        "realisedProfit": fmt_money(pos.realised),
        "liquidationPrice": float(engine.liquidation_price(pos).quantize(market.tick)),
        "pnlRatio": fmt_dec((upnl / margin).quantize(Decimal("0.0001"))) if margin else "0",
        "maxMarginReduction": "0.0000",
        "riskRate": fmt_dec(risk.quantize(Decimal("0.0001"))),
        "markPrice": _px(market, mark),
        "positionValue": fmt_money(value),
        "onlyOnePosition": not engine.account.hedge_mode,
        "updateTime": pos.update_time,
    }


def balance_object(engine: MatchingEngine) -> dict[str, Any]:
    """The USDT element of ``/v3/user/balance`` (also the ``balance`` object of v2)."""
    account = engine.account
    upnl = engine.unrealized_total()
    return {
        "userId": account.user_id,
        "asset": "USDT",
        "balance": fmt_money(account.wallet),
        "equity": fmt_money(account.wallet + upnl),
        "unrealizedProfit": fmt_money(upnl),
        "realisedProfit": fmt_money(account.realised_total),
        "availableMargin": fmt_money(engine.available_margin()),
        "usedMargin": fmt_money(engine.used_margin()),
        "freezedMargin": fmt_money(engine.frozen_margin()),
        "shortUid": account.short_uid,
    }


def income_object(record: Income) -> dict[str, Any]:
    """A row of ``/user/income``."""
    return {
        "symbol": record.symbol,
        "incomeType": record.income_type,
        "income": fmt_money(record.amount),
        "asset": "USDT",
        "info": record.info,
        "time": record.time_ms,
        "tranId": record.tran_id,
        "tradeId": record.trade_id,
    }


# ---- account stream ---------------------------------------------------------------------------
def ws_order_update(order: Order, exec_type: str, fill: Fill | None, market: Market, now_ms: int) -> dict[str, Any]:
    """ORDER_TRADE_UPDATE push."""
    last_qty = fill.qty if fill else ZERO
    last_price = fill.price if fill else ZERO
    return {
        "e": "ORDER_TRADE_UPDATE",
        "E": now_ms,
        "T": now_ms,
        "o": {
            "s": order.symbol,
            "c": order.client_order_id,
            "i": order.order_id,
            "S": order.side,
            "o": order.type,
            "q": _qty(market, order.qty),
            "p": _px(market, order.price),
            "sp": _px(market, order.stop_price),
            "ap": fmt_price(order.avg_price, market.pp),
            "x": exec_type,
            "X": WS_STATUS.get(order.status, order.status),
            "N": "USDT",
            "n": fmt_money(fill.commission) if fill else "0",
            "T": fill.time_ms if fill else order.update_time_ms,
            "wt": order.working_type,
            "ps": order.position_side,
            "rp": fmt_money(fill.realized_pnl) if fill else "0",
            "z": _qty(market, order.executed),
            "l": _qty(market, last_qty),
            "L": _px(market, last_price),
            "ro": order.reduce_only or order.closing,
            "sg": "false",
            "td": fill.trade_id if fill else 0,
            "tv": fmt_money(fill.quote) if fill else "0",
        },
    }


def ws_account_update(reason: str, change: Decimal, positions: list[Position], engine: MatchingEngine, now_ms: int) -> dict[str, Any]:
    """ACCOUNT_UPDATE push (balance, and the positions the event touched)."""
    account = engine.account
    rows = []
    for pos in positions:
        market = engine.markets[pos.symbol]
        rows.append(
            {
                "s": pos.symbol,
                "pa": _qty(market, pos.amount),
                "ep": fmt_price(pos.entry_price, market.pp),
                "up": fmt_money(pos.unrealized(engine.mark(pos.symbol))),
                "mt": "isolated" if pos.isolated else "cross",
                "iw": fmt_money(pos.margin if pos.isolated else ZERO),
                "ps": pos.side,
                "cr": fmt_money(pos.realised),
            }
        )
    return {
        "e": "ACCOUNT_UPDATE",
        "E": now_ms,
        "T": now_ms,
        "a": {
            "m": reason,
            "B": [
                {
                    "a": "USDT",
                    "wb": fmt_money(account.wallet),
                    "cw": fmt_money(account.wallet - account.isolated_margin_total()),
                    "bc": fmt_money(change),
                }
            ],
            "P": rows,
        },
    }


def ws_config_update(symbol: str, engine: MatchingEngine, now_ms: int) -> dict[str, Any]:
    """ACCOUNT_CONFIG_UPDATE push for one symbol."""
    settings = engine.account.settings[symbol]
    return {
        "e": "ACCOUNT_CONFIG_UPDATE",
        "E": now_ms,
        "ac": {
            "s": symbol,
            "l": settings.long_leverage,
            "S": settings.short_leverage,
            "mt": "isolated" if settings.margin_type == "ISOLATED" else "cross",
        },
    }


# ---- market data ------------------------------------------------------------------------------
def contract_object(market: Market) -> dict[str, Any]:
    """A row of ``/quote/contracts``."""
    return {
        "contractId": str(market.contract_id),
        "symbol": market.symbol,
        "size": "0",
        "quantityPrecision": market.qp,
        "pricePrecision": market.pp,
        "feeRate": 0.0005,
        "makerFeeRate": 0.0002,
        "takerFeeRate": 0.0005,
        "tradeMinLimit": 0,
        "tradeMinQuantity": num(market.min_qty),
        "tradeMinUSDT": num(market.min_notional),
        "maxLongLeverage": market.max_leverage,
        "maxShortLeverage": market.max_leverage,
        "currency": "USDT",
        "asset": market.base_asset,
        "status": 1,
        "apiStateOpen": "true",
        "apiStateClose": "true",
        "ensureTrigger": False,
        "triggerFeeRate": "0.00020000",
        "brokerState": "true",
        "launchTime": market.candles[0].open_time_ms,
        "maintainTime": 0,
        "offTime": 0,
        "displayName": market.symbol,
    }


def ticker_stats(market: Market) -> tuple[int, int, int, int, float, float, int]:
    """(open, high, low, last, volume, quote volume, open time) over the last 24 h, in ticks."""
    rolling = market.rolling
    forming = market.forming
    highs = [rolling.maxq[0][1]] if rolling.maxq else []
    lows = [rolling.minq[0][1]] if rolling.minq else []
    volume, quote_volume = rolling.volume, rolling.quote_volume
    if forming is not None and forming.index == market.closed_count:
        highs.append(forming.h)
        lows.append(forming.l)
        volume += forming.v
        quote_volume += forming.quote_v
    open_ticks = rolling.items[0][5] if rolling.items else (forming.o if forming else market.last_ticks)
    open_time = rolling.items[0][0] if rolling.items else (forming.open_time_ms if forming else market.last_trade_ms)
    high = max(highs) if highs else market.last_ticks
    low = min(lows) if lows else market.last_ticks
    return open_ticks, high, low, market.last_ticks, max(volume, 0.0), max(quote_volume, 0.0), open_time


def rest_ticker(market: Market, now_ms: int) -> dict[str, Any]:
    """``/quote/ticker`` object."""
    o, h, l, c, v, qv, open_time = ticker_stats(market)
    change = c - o
    pct = (change / o * 100.0) if o else 0.0
    bid, ask = market.best_bid(), market.best_ask()
    return {
        "symbol": market.symbol,
        "priceChange": market.price_str(change),
        "priceChangePercent": f"{pct:.2f}",
        "lastPrice": market.price_str(c),
        "lastQty": market.qty_str(market.last_qty),
        "highPrice": market.price_str(h),
        "lowPrice": market.price_str(l),
        "volume": f"{v:.4f}",
        "quoteVolume": f"{qv:.2f}",
        "openPrice": market.price_str(o),
        "openTime": open_time,
        "closeTime": now_ms,
        "bidPrice": market.price_str(bid),
        "bidQty": fmt_dec(market.level_qty),
        "askPrice": market.price_str(ask),
        "askQty": fmt_dec(market.level_qty),
    }


def depth_levels(market: Market, levels: int) -> tuple[list[list[str]], list[list[str]]]:
    """Bids best-first and asks highest-first (the real feed's order), as [price, qty] strings."""
    bids, asks = market.book(levels)
    qty = fmt_dec(market.level_qty)
    bid_rows = [[market.price_str(t), qty] for t, _ in bids]
    ask_rows = [[market.price_str(t), qty] for t, _ in reversed(asks)]
    return bid_rows, ask_rows


def ws_kline(market: Market, interval: str, bar: tuple[int, int, int, int, int, float]) -> dict[str, Any]:
    """``<SYM>@kline_<interval>`` push: the forming bar, ``T`` = open time, no closed flag."""
    t, o, h, l, c, v = bar
    return {
        "code": 0,
        "dataType": f"{market.symbol}@kline_{interval}",
        "s": market.symbol,
        "data": [
            {
                "c": market.price_str(c),
                "o": market.price_str(o),
                "h": market.price_str(h),
                "l": market.price_str(l),
                "v": market.qty_str(v),
                "T": t,
            }
        ],
    }


def ws_ticker(market: Market, now_ms: int) -> dict[str, Any]:
    """``<SYM>@ticker`` push (``B``/``A`` are prices, ``b``/``a`` quantities)."""
    o, h, l, c, v, qv, open_time = ticker_stats(market)
    change = c - o
    pct = (change / o * 100.0) if o else 0.0
    qty = fmt_dec(market.level_qty)
    return {
        "code": 0,
        "dataType": f"{market.symbol}@ticker",
        "data": {
            "e": "24hTicker",
            "E": now_ms,
            "s": market.symbol,
            "p": market.price_str(change),
            "P": f"{pct:.2f}",
            "c": market.price_str(c),
            "L": market.qty_str(market.last_qty),
            "h": market.price_str(h),
            "l": market.price_str(l),
            "v": f"{v:.4f}",
            "q": f"{qv:.2f}",
            "o": market.price_str(o),
            "O": open_time,
            "C": now_ms,
            "A": market.price_str(market.best_ask()),
            "a": qty,
            "B": market.price_str(market.best_bid()),
            "b": qty,
        },
    }


def ws_book_ticker(market: Market, now_ms: int) -> dict[str, Any]:
    """``<SYM>@bookTicker`` push (letter case reversed from @ticker: ``b``/``a`` prices)."""
    qty = fmt_dec(market.level_qty)
    return {
        "code": 0,
        "dataType": f"{market.symbol}@bookTicker",
        "data": {
            "e": "bookTicker",
            "u": now_ms,
            "E": now_ms,
            "T": market.last_trade_ms,
            "s": market.symbol,
            "b": market.price_str(market.best_bid()),
            "B": qty,
            "a": market.price_str(market.best_ask()),
            "A": qty,
        },
    }
