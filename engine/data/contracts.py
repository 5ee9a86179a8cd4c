"""Contract discovery: the perpetual contracts an exchange lists, with trading rules, cached for an hour.

:class:`ContractDirectory` keeps the list in memory for ``ttl_s`` (one hour) and, when given a
``cache_file``, on disk as JSON, so one-shot commands (``trading-bot doctor --contracts``) run
twice within the hour ask the exchange once. A damaged cache file is ignored and replaced.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from .providers import ContractInfo, MarketDataProvider

log = logging.getLogger(__name__)

CONTRACTS_TTL_S = 3600.0


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/trading-bot`` (default ``~/.cache/trading-bot``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "trading-bot"


class ContractDirectory:
    """The contract list of one exchange: loaded on first use, reused for ``ttl_s`` seconds."""

    def __init__(self, exchange: str, loader: Callable[[], Awaitable[list[ContractInfo]]], *,
                 ttl_s: float = CONTRACTS_TTL_S, cache_file: Path | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.exchange = exchange
        self._loader = loader
        self._ttl_s = ttl_s
        self._cache_file = cache_file
        self._clock = clock  # wall clock: the file cache outlives the process
        self._contracts: list[ContractInfo] | None = None
        self._loaded_at = 0.0
        self._lock = asyncio.Lock()
        self.loads = 0  # requests made to the exchange (for tests and the report)

    @classmethod
    def for_provider(cls, provider: MarketDataProvider, *, cache_dir: Path | None = None,
                     ttl_s: float = CONTRACTS_TTL_S, clock: Callable[[], float] = time.time) -> ContractDirectory:
        """A directory backed by ``provider.list_contracts`` (file cache in ``cache_dir`` when given)."""
        cache_file = cache_dir / f"contracts-{provider.name}.json" if cache_dir is not None else None
        return cls(provider.name, provider.list_contracts, ttl_s=ttl_s, cache_file=cache_file, clock=clock)

    @property
    def age_s(self) -> float | None:
        """Seconds since the list in use was fetched from the exchange (None before the first load)."""
        return None if self._contracts is None else self._clock() - self._loaded_at

    async def contracts(self, *, refresh: bool = False) -> list[ContractInfo]:
        """Every perpetual contract, from memory, the file cache, or the exchange (in that order)."""
        async with self._lock:
            if not refresh and self._contracts is not None and self._clock() - self._loaded_at < self._ttl_s:
                return self._contracts
            if not refresh and self._cache_file is not None:
                cached = await asyncio.to_thread(self._read_file)
                if cached is not None:
                    self._contracts, self._loaded_at = cached
                    return self._contracts
            contracts = await self._loader()
            self.loads += 1
            self._contracts, self._loaded_at = contracts, self._clock()
            if self._cache_file is not None:
                await asyncio.to_thread(self._write_file, contracts, self._loaded_at)
            return contracts

    async def get(self, symbol: str) -> ContractInfo | None:
        """One contract by BingX-style symbol or exchange id (None when not listed)."""
        wanted = symbol.strip().upper()
        for c in await self.contracts():
            if c.symbol.upper() == wanted or c.exchange_symbol.upper() == wanted:
                return c
        return None

    def _read_file(self) -> tuple[list[ContractInfo], float] | None:
        assert self._cache_file is not None
        try:
            data = json.loads(self._cache_file.read_text(encoding="utf-8"))
            fetched_at = float(data["fetched_at"])
            if data.get("exchange") != self.exchange or not 0 <= self._clock() - fetched_at < self._ttl_s:
                return None
            return [ContractInfo.from_json(item) for item in data["contracts"]], fetched_at
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring the damaged contract cache %s: %s", self._cache_file, exc)
            return None

    def _write_file(self, contracts: list[ContractInfo], fetched_at: float) -> None:
        assert self._cache_file is not None
        payload = {"exchange": self.exchange, "fetched_at": fetched_at, "contracts": [c.to_json() for c in contracts]}
        try:
            self._cache_file.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".contracts.", dir=self._cache_file.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(payload, fh)
            os.replace(tmp, self._cache_file)
        except OSError as exc:  # a cache that cannot be written only costs a request next time
            log.warning("cannot write the contract cache %s: %s", self._cache_file, exc)


def _text(value: object) -> str:
    if value is None:
        return "-"
    return format(value, "f") if hasattr(value, "as_tuple") else str(value)


def render_contracts(exchange: str, contracts: Sequence[ContractInfo], *, age_s: float | None = None,
                     symbols: Sequence[str] = ()) -> str:
    """A plain-text table of contracts (all, or only ``symbols``), with the rules a trader checks first."""
    wanted = {s.upper() for s in symbols}
    rows = [c for c in contracts if not wanted or c.symbol.upper() in wanted or c.exchange_symbol.upper() in wanted]
    header = ("symbol", "exchange id", "tick", "step", "min qty", "min notional", "max lev", "status")
    table = [header] + [
        (c.symbol, c.exchange_symbol, _text(c.tick_size), _text(c.step_size), _text(c.min_qty),
         _text(c.min_notional), f"{c.max_leverage}x" if c.max_leverage else "-", c.status or ("trading" if c.active
                                                                                             else "inactive"))
        for c in rows
    ]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = [f"{exchange}: {len(contracts)} perpetual contract(s)" + (
        f", {len(rows)} shown" if wanted else "") + (f" (list fetched {age_s / 60:.0f} min ago)" if age_s else "")]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in table]
    missing = sorted(wanted - {c.symbol.upper() for c in rows} - {c.exchange_symbol.upper() for c in rows})
    if missing:
        lines.append(f"not listed on {exchange}: {', '.join(missing)}")
    return "\n".join(lines)
