"""Execution: paper and live brokers behind one interface, order lifecycle, positions, stops on the exchange.

- ``venue``: the small async interface a broker trades through (``Venue``) and its records
- ``paper_venue``: ``PaperVenue``, fills simulated from the live market feed, wallet in the DB
- ``live_venue``: ``LiveVenue``, real orders through ``BingxRestClient``
- ``order_tracker``: live order status from the account stream, REST polling as the safety net
- ``order_store``: orders persisted before they are sent, status events, fills one by one
- ``positions``: trades (PENDING/OPEN/CLOSING/CLOSED) in the DB with PnL in money and R
- ``broker``: ``ExecutionBroker``, the ``engine.trading.Broker`` both modes share
- ``trade_ctx``: the values the broker works with (``TradeRequest``, ``GateDecision``, ``TradeCtx``, ``TradeView``)
- ``recovery``: restart recovery of the broker's trades (``BrokerRecovery``)
- ``funding``: funding payments booked on the trades (``FundingBooker``) and their ledger
- ``signal_rows``: the ``Signal`` rows the broker stores, with their fate
- ``runtime``: ``TradingRuntime``, market feed -> ``SymbolEngine`` -> broker for one process
"""

from engine.execution.broker import ExecutionBroker, GateDecision, PreTradeGate, TradeRequest
from engine.execution.venue import ExecMode

__all__ = ["ExecMode", "ExecutionBroker", "GateDecision", "PreTradeGate", "TradeRequest"]
