"""Market data beyond the live stream: bulk history, other exchanges, cross-exchange alignment.

* ``symbols``: BingX ``BTC-USDT`` <-> ccxt ``BTC/USDT:USDT`` symbol mapping.
* ``providers``: the :class:`MarketDataProvider` interface (a ``CandleSource`` plus contract
  discovery), :class:`ContractInfo`, errors and :func:`create_provider`.
* ``bingx_provider`` / ``ccxt_provider``: BingX through the project's client, anything else
  through ``ccxt.async_support``.
* ``paging``: one page request after another over a time range, refetching holes.
* ``csvfiles``: exact-text CSV writing (atomic) and the resumable ``.partial`` file.
* ``gaps``: missing candles in a series.
* ``download``: ``trading-bot download`` (resume, de-duplication, gap report, progress bar).
* ``align``: candle series from several exchanges on common timestamps within a tolerance.
* ``contracts``: perpetual contracts with their trading rules, cached for an hour.
* ``cli``: the ``download`` subcommand and the ``doctor --contracts`` entry point.
"""
