"""Symbol mapping between BingX (``BTC-USDT``) and ccxt unified perpetual symbols (``BTC/USDT:USDT``).

The rest of the project speaks BingX symbols; other exchanges are reached through ccxt, whose
unified symbol for a linear perpetual is ``BASE/QUOTE:SETTLE``. Only USDT-style linear
perpetuals (settled in the quote currency) map one-to-one, so that is all we translate.
"""

from __future__ import annotations

import re

_BINGX_RE = re.compile(r"^[A-Z0-9]{1,30}-[A-Z0-9]{2,10}$")
_CCXT_RE = re.compile(r"^([A-Z0-9]{1,30})/([A-Z0-9]{2,10})(?::([A-Z0-9]{2,10}))?$")


class SymbolError(ValueError):
    """A symbol that is not a recognisable perpetual symbol."""


def is_bingx_symbol(symbol: str) -> bool:
    """Whether ``symbol`` looks like a BingX perpetual symbol (``BTC-USDT``)."""
    return bool(_BINGX_RE.match(symbol))


def to_ccxt_symbol(symbol: str) -> str:
    """``BTC-USDT`` -> ``BTC/USDT:USDT``; a ccxt symbol (``BTC/USDT:USDT``) is returned unchanged.

    A ccxt symbol without settle currency (``BTC/USDT``, a spot symbol) is refused: downloading
    spot candles when a perpetual was meant would silently give other prices.
    """
    text = symbol.strip().upper()
    if _BINGX_RE.match(text):
        base, quote = text.split("-")
        return f"{base}/{quote}:{quote}"
    match = _CCXT_RE.match(text)
    if match and match.group(3):
        return text
    if match:
        raise SymbolError(f"{symbol!r} is a spot symbol; a perpetual is written {text}:{match.group(2)} or "
                          f"{match.group(1)}-{match.group(2)}")
    raise SymbolError(f"{symbol!r} is not a perpetual symbol (write BTC-USDT or BTC/USDT:USDT)")


def from_ccxt_symbol(symbol: str) -> str:
    """``BTC/USDT:USDT`` -> ``BTC-USDT``; raises :class:`SymbolError` for spot, dated or inverse symbols."""
    match = _CCXT_RE.match(symbol.strip().upper())
    if not match or not match.group(3):
        raise SymbolError(f"{symbol!r} is not a ccxt perpetual symbol like BTC/USDT:USDT")
    base, quote, settle = match.groups()
    if settle != quote:
        raise SymbolError(f"{symbol!r} is settled in {settle}, not in {quote}: no BingX USDT-M equivalent")
    return f"{base}-{quote}"


def to_bingx_symbol(symbol: str) -> str:
    """Either spelling -> the BingX spelling (``BTC-USDT``)."""
    text = symbol.strip().upper()
    if _BINGX_RE.match(text):
        return text
    return from_ccxt_symbol(text)
