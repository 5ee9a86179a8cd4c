"""Market data: candles, their files, validation and aggregation.

* ``candle``: the 1m ``Candle`` record and the CSV format of ``shared/data/market``.
* ``events``: ``TradeTick`` / ``KlineUpdate``, the stream events the builders consume.
* ``builders``: closed 1m candles from kline pushes or raw trades.
* ``validation`` / ``stream``: sanity checks, gap accounting and the bounded recent-candle buffer.
* ``aggregate``: 5m (or any multiple) candles and the no-look-ahead context rule.
* ``feed``: ``MarketFeed``, the async live pipeline with REST backfill (``CandleSource``) and warm-up.
"""
