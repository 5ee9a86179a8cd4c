"""Server-side request signature verification (``bingx-protocol.md`` 3.2 and 11).

The real server's exact rule is not documented, so the simulator accepts the whole
set of plausible variants clients use (the "accept set"):

(a) the query string with the ``signature`` pair removed, percent-decoded
    (ccxt and the official code samples sign this);
(b) the same remainder exactly as received, still encoded;
(c) with a form body: the query remainder (decoded or raw) followed by the raw body,
    with and without a joining ``&`` (docs-2023 example, BingX-swap-api-doc#38), or
    the body alone (decoded or raw) when the signature travels inside the body;
(d) with a JSON body: its fields sorted a-z as ``k=v&k=v`` (docs-v3 SignAuth).

Parameter order is never required to be sorted. ``+`` is a literal plus (no
form-style space decoding). Comparison is constant-time and case-insensitive.
``strict=True`` accepts only (a).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from urllib.parse import unquote

SIGNATURE_KEY = "signature"


def hmac_hex(secret: str, message: str) -> str:
    """Lowercase hex HMAC-SHA256 of ``message`` keyed with ``secret`` (both UTF-8)."""
    return hmac.new(secret.encode("utf-8"), message.encode("utf-8"), hashlib.sha256).hexdigest()


def _split_pairs(raw: str) -> list[str]:
    return [pair for pair in raw.split("&") if pair != ""]


def _pair_key(pair: str) -> str:
    return unquote(pair.split("=", 1)[0])


def _decode_pair(pair: str) -> str:
    key, sep, value = pair.partition("=")
    return unquote(key) + sep + unquote(value)


def _strip_signature(raw: str) -> tuple[str, str | None]:
    """Remove the ``signature=`` pair(s); return the raw remainder and the (last) signature seen."""
    kept: list[str] = []
    signature: str | None = None
    for pair in _split_pairs(raw):
        if _pair_key(pair) == SIGNATURE_KEY:
            signature = unquote(pair.partition("=")[2])
        else:
            kept.append(pair)
    return "&".join(kept), signature


def _decoded(raw: str) -> str:
    return "&".join(_decode_pair(pair) for pair in _split_pairs(raw))


@dataclass(frozen=True, slots=True)
class SignatureCheck:
    """Outcome of verification: ``present`` False means the request carried no signature at all."""

    present: bool
    valid: bool


def _json_body_fields(body: str) -> dict[str, object] | None:
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _json_value_text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def candidate_strings(query_raw: str, body_raw: str, content_type: str, *, strict: bool = False) -> tuple[list[str], str | None]:
    """Every string the signature may have been computed over, and the signature sent (or None)."""
    query_rest, signature = _strip_signature(query_raw)
    candidates = [_decoded(query_rest)]
    if strict:
        return candidates, signature
    candidates.append(query_rest)
    body = body_raw or ""
    if body:
        if "json" in content_type:
            fields = _json_body_fields(body)
            if fields is not None:
                body_sig = fields.pop(SIGNATURE_KEY, None)
                if signature is None and body_sig is not None:
                    signature = str(body_sig)
                candidates.append("&".join(f"{k}={_json_value_text(fields[k])}" for k in sorted(fields)))
        else:
            body_rest, body_sig = _strip_signature(body)
            if signature is None:
                signature = body_sig
            for query_part in {query_rest, _decoded(query_rest)}:
                for body_part in {body_rest, _decoded(body_rest)}:
                    if query_part:
                        candidates.append(query_part + body_part)
                        candidates.append(query_part + "&" + body_part)
                    else:
                        candidates.append(body_part)
    return candidates, signature


def verify(secret: str, query_raw: str, body_raw: str = "", content_type: str = "", *, strict: bool = False) -> SignatureCheck:
    """Check the request's signature against every accepted signing variant."""
    candidates, signature = candidate_strings(query_raw, body_raw, content_type, strict=strict)
    if not signature:
        return SignatureCheck(present=False, valid=False)
    sent = signature.strip().lower().encode("ascii", "replace")
    valid = False
    for text in dict.fromkeys(candidates):
        # No early exit: constant work whichever variant matches.
        if hmac.compare_digest(hmac_hex(secret, text).encode("ascii"), sent):
            valid = True
    return SignatureCheck(present=True, valid=valid)


def request_params(query_raw: str, body_raw: str = "", content_type: str = "") -> dict[str, str]:
    """All request parameters (query, then form or JSON body), percent-decoded, ``signature`` excluded."""
    params: dict[str, str] = {}
    for pair in _split_pairs(query_raw):
        key, _, value = pair.partition("=")
        params[unquote(key)] = unquote(value)
    body = body_raw or ""
    if body:
        if "json" in content_type:
            fields = _json_body_fields(body)
            if fields is not None:
                for name, field_value in fields.items():
                    params[str(name)] = _json_value_text(field_value)
        else:
            for pair in _split_pairs(body):
                key, _, value = pair.partition("=")
                params[unquote(key)] = unquote(value)
    params.pop(SIGNATURE_KEY, None)
    return params
