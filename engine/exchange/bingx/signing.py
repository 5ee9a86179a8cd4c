"""Request signing for BingX (protocol notes section 3, the ccxt scheme proven in production).

All parameters, ``timestamp`` included, are sorted by key; the raw ``k=v&k=v`` string with
*unencoded* values is signed with HMAC-SHA256 (lower-case hex); the request carries the same
keys in the same order in its query string, values percent-encoded (RFC 3986 unreserved chars
kept), then ``&signature=<hex>`` last, with an empty body, for every HTTP method.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from operator import itemgetter
from typing import Any

# Characters that would make the raw signed text ambiguous once the server splits the query.
_FORBIDDEN_IN_VALUES = frozenset("&=#?\r\n")
_FORBIDDEN_RE = re.compile("[" + re.escape("".join(sorted(_FORBIDDEN_IN_VALUES))) + "]")
# Text that percent-encoding leaves as it is (RFC 3986 unreserved) and JSON strings that need no escape:
# most values are like that, and the checks are far cheaper than quote() / the escaping loop (issue 10)
_UNRESERVED_RE = re.compile(r"[A-Za-z0-9_.~-]*")
_PERCENT_ENCODED = [chr(b) if _UNRESERVED_RE.fullmatch(chr(b)) else f"%{b:02X}" for b in range(256)]  # byte -> its text
_JSON_ESCAPED_RE = re.compile(r'["\\\x00-\x1f]')  # what _json_string escapes: quote, backslash, control chars


class SigningValueError(ValueError):
    """A parameter value cannot be sent safely (it would break the signed text)."""


def format_decimal(value: Decimal) -> str:
    """Plain decimal text, never exponent notation (``Decimal('1E-7')`` -> ``0.0000001``)."""
    if not value.is_finite():
        raise SigningValueError(f"non-finite number {value!r} cannot be sent")
    text = format(value, "f")
    return "0" if text in ("-0", "-0.0") else text


def compact_json(value: Any) -> str:
    """Compact JSON (``,`` and ``:`` separators, no spaces) that keeps ``Decimal`` text exact.

    ``json.dumps`` would turn ``Decimal('31968.0')`` into a float or refuse it; BingX wants the
    number as written, so this small serializer handles the value types the API uses.
    """
    kind = type(value)  # the usual kinds first, by exact type (an order's JSON is on the order path, issue 10)
    if kind is str:
        return _json_string(value)
    if kind is Decimal:
        return format_decimal(value)
    if kind is dict:
        return _json_object(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return compact_json(value.value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        return format_decimal(value)
    if isinstance(value, float):
        return format_decimal(Decimal(repr(value)))
    if isinstance(value, str):
        return _json_string(value)
    if isinstance(value, Mapping):
        return _json_object(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(compact_json(v) for v in value) + "]"
    raise SigningValueError(f"cannot serialise {type(value).__name__} as JSON")


def _json_object(value: Mapping[Any, Any]) -> str:
    return "{" + ",".join(f"{_json_string(str(k))}:{compact_json(v)}" for k, v in value.items()) + "}"


def _json_string(text: str) -> str:
    if not _JSON_ESCAPED_RE.search(text):
        return f'"{text}"'
    out = ['"']
    for ch in text:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ord(ch) < 0x20:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def to_wire(value: Any) -> str:
    """The text form of one parameter value as it is signed (before percent-encoding)."""
    kind = type(value)  # the usual kinds first, by exact type (issue 10); subclasses (enums, bool) go the long way
    if kind is str:
        text = value
    elif kind is Decimal:
        text = format_decimal(value)
    elif kind is int:
        text = str(value)
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, Enum):
        text = to_wire(value.value)
    elif isinstance(value, int):
        text = str(value)
    elif isinstance(value, Decimal):
        text = format_decimal(value)
    elif isinstance(value, float):
        text = format_decimal(Decimal(repr(value)))
    elif isinstance(value, str):
        text = value
    elif isinstance(value, (Mapping, list, tuple)):
        text = compact_json(value)
    else:
        raise SigningValueError(f"unsupported parameter type {type(value).__name__}")
    if _FORBIDDEN_RE.search(text):
        bad = _FORBIDDEN_IN_VALUES.intersection(text)
        raise SigningValueError(f"parameter value contains forbidden characters {sorted(bad)!r}")
    return text


def canonical_string(params: Mapping[str, Any] | Iterable[tuple[str, Any]], *, sort: bool = True) -> str:
    """The raw ``k=v&k=v`` text that is signed. ``None`` values are dropped."""
    pairs = _pairs(params, sort=sort)
    return "&".join(f"{k}={v}" for k, v in pairs)


def sign(payload: str, secret: str) -> str:
    """Lower-case hex HMAC-SHA256 of ``payload`` keyed with ``secret`` (both UTF-8)."""
    return hmac.new(secret.encode("utf-8"), payload.encode("utf-8"), hashlib.sha256).hexdigest()


def encode_value(text: str) -> str:
    """Percent-encode a value's UTF-8 bytes, keeping only RFC 3986 unreserved characters."""
    if _UNRESERVED_RE.fullmatch(text):
        return text
    return "".join(map(_PERCENT_ENCODED.__getitem__, text.encode("utf-8")))  # quote(text, safe=""), a third of its time


@dataclass(frozen=True, slots=True)
class SignedQuery:
    """A signed query string: ``query`` is what goes after ``?`` (signature included)."""

    raw: str
    signature: str
    query: str

    def __repr__(self) -> str:  # never print a full signature in logs or tracebacks
        return f"SignedQuery(signature={truncate_signature(self.signature)!r})"


def sign_params(
    params: Mapping[str, Any] | Iterable[tuple[str, Any]], secret: str, *, sort: bool = True
) -> SignedQuery:
    """Sign ``params`` (which must already hold ``timestamp``) and build the query string."""
    pairs = _pairs(params, sort=sort)
    raw = "&".join(f"{k}={v}" for k, v in pairs)
    signature = sign(raw, secret)
    encoded = "&".join(f"{k}={encode_value(v)}" for k, v in pairs)
    query = f"{encoded}&signature={signature}" if encoded else f"signature={signature}"
    return SignedQuery(raw=raw, signature=signature, query=query)


def encode_params(params: Mapping[str, Any] | Iterable[tuple[str, Any]], *, sort: bool = True) -> str:
    """Unsigned query string (public endpoints): same encoding rules as signed ones."""
    return "&".join(f"{k}={encode_value(v)}" for k, v in _pairs(params, sort=sort))


def truncate_signature(signature: str) -> str:
    """The only form of a signature that may appear in logs: its first 8 hex digits."""
    return signature[:8] + "…" if len(signature) > 8 else signature


def _pairs(params: Mapping[str, Any] | Iterable[tuple[str, Any]], *, sort: bool) -> list[tuple[str, str]]:
    items = list(params.items()) if type(params) is dict or isinstance(params, Mapping) else list(params)
    pairs = [(str(k), to_wire(v)) for k, v in items if v is not None]
    if sort:
        pairs.sort(key=itemgetter(0))
    return pairs
