"""Wire-level conventions shared by the simulator's REST and WebSocket sides.

BingX answers business errors with HTTP 200 and ``{"code": <int>, "msg": <text>}``;
the codes and messages below are the ones in ``shared/bingx-protocol.md`` section 7.
Decimals go out as plain strings (never scientific notation); order ids are
64-bit integers and go out unquoted, which stdlib ``json`` does natively.
"""

from __future__ import annotations

import json
import zlib
from decimal import Decimal
from typing import Any

#: Default message per error code (what the real API says, as far as the notes record it).
ERROR_MESSAGES: dict[int, str] = {
    100001: "Signature verification failed due to signature mismatch",
    100004: "Permission denied as the API key was created without the permission",
    100400: "this api is not exist",
    100410: "The current system is busy, please try again later",
    100412: "Null signature",
    100413: "Incorrect apiKey",
    100421: "Null timestamp or timestamp mismatch",
    100500: "Internal system error",
    80012: "service unavailable",
    80014: "Invalid parameters",
    80015: "dataType not support",
    80016: "order not exist",
    80017: "position not exist",
    80018: "order is already filled",
    80403: "your topic num over max 200",
    101204: "Insufficient margin",
    101205: "No position to close",
    101209: "The maximum position value for this leverage is exceeded",
    101211: "Order price is outside the allowed range",
    101215: "The Maker (Post Only) order ranks first in the current order book and will be cancelled",
    101290: "Reduce Only order can only decrease your position",
    101400: "Order validation failed",
    101414: "The leverage exceeds the maximum leverage of this symbol",
    101481: "clientOrderID cannot be repeated",
    104103: "cannot switch position mode with positions or pending orders",
    109400: "Invalid parameters",
    109401: "user has pending orders or position",
    109414: "order not exist",
    109425: "symbol not exist",
    110406: "The position stop loss order already exists",
    110407: "The position take profit order already exists",
    110411: "The stop loss price of a long position must be lower than the current price",
    110412: "The stop loss price of a short position must be higher than the current price",
    110413: "The take profit price of a long position must be higher than the current price",
    110414: "The take profit price of a short position must be lower than the current price",
}


class ApiError(Exception):
    """A business error answered as ``{"code": code, "msg": msg}`` (HTTP 200 unless ``http_status``)."""

    def __init__(self, code: int, msg: str | None = None, *, http_status: int = 200) -> None:
        self.code = code
        self.msg = msg if msg is not None else ERROR_MESSAGES.get(code, "error")
        self.http_status = http_status
        super().__init__(f"{code}: {self.msg}")


def ok_body(data: Any) -> dict[str, Any]:
    """The success envelope."""
    return {"code": 0, "msg": "", "data": data}


def error_body(code: int, msg: str, timestamp_ms: int) -> dict[str, Any]:
    """The error envelope (shape of the recorded ``100001`` answer plus an empty ``data``)."""
    return {"code": code, "msg": msg, "timestamp": timestamp_ms, "data": {}}


def _json_default(value: Any) -> Any:
    # A Decimal that slipped through a formatter still goes out exact, as a string.
    if isinstance(value, Decimal):
        return fmt_dec(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def dumps(obj: Any) -> str:
    """Compact JSON, big integers unquoted."""
    return json.dumps(obj, separators=(",", ":"), default=_json_default)


def gzip_frame(text: str) -> bytes:
    """One gzip member holding ``text`` (every BingX swap WebSocket frame is one).

    A 4 KiB window with memLevel 4: for frames of a few KB it compresses as well as the
    defaults, and setting it up costs ~6 us instead of ~60 us (zlib's default buffers).
    """
    compressor = zlib.compressobj(1, zlib.DEFLATED, 16 + 12, 4)
    return compressor.compress(text.encode("utf-8")) + compressor.flush()


def fmt_dec(value: Decimal) -> str:
    """Plain decimal text without exponent, trailing zeros kept as given."""
    text = format(value, "f")
    return "0" if text in ("-0", "") else text


_EIGHT = Decimal("0.00000001")
_FOUR = Decimal("0.0001")


def fmt_money(value: Decimal) -> str:
    """USDT amounts: exact to 1e-8, shown with at least 4 decimals like the real API ("194.8212")."""
    text = format(value.quantize(_EIGHT), "f")
    whole, _, frac = text.partition(".")
    frac = frac.rstrip("0")
    if len(frac) < 4:
        frac = frac.ljust(4, "0")
    if whole == "-0" and set(frac) == {"0"}:
        whole = "0"
    return f"{whole}.{frac}"


def num(value: Decimal) -> int | float:
    """A Decimal as a JSON number (used where the real API sends numbers, e.g. the place-order echo)."""
    if value == value.to_integral_value():
        return int(value)
    return float(value)


def parse_bool(value: str | None, default: bool = False) -> bool:
    """BingX booleans travel as the strings ``true``/``false``."""
    if value is None or value == "":
        return default
    lowered = value.strip().lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise ApiError(109400, f"invalid boolean value {value!r}")


def parse_decimal(name: str, value: str | None, *, required: bool = False, code: int = 80014) -> Decimal | None:
    """A numeric parameter as Decimal; missing -> None (or error when required); junk -> error."""
    if value is None or value == "":
        if required:
            raise ApiError(code, f"parameter {name} is must")
        return None
    try:
        result = Decimal(value.strip())
    except ArithmeticError:
        raise ApiError(code, f"parameter {name} is not a number") from None
    if not result.is_finite():
        raise ApiError(code, f"parameter {name} is not a number")
    return result


def parse_int(name: str, value: str | None, *, default: int | None = None, code: int = 109400) -> int | None:
    """An integer parameter; junk -> ``code``."""
    if value is None or value == "":
        return default
    try:
        return int(value.strip())
    except ValueError:
        raise ApiError(code, f"parameter {name} must be an integer") from None
