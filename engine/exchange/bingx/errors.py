"""One exception hierarchy for the BingX layer, keyed by the BingX codes the bot acts on.

Every error carries ``code`` (BingX business code, or ``None`` for transport/local errors),
``http_status``, ``endpoint`` (the path only: never the query, which holds the signature) and
``retryable``: whether repeating the *same* request later may succeed. ``retryable`` never
licenses resending an order placement; the REST client's placement path looks the order up
by client order id first (see ``rest.BingxRestClient.place_order``).

Messages never contain the API key, the secret or a full signature.
"""

from __future__ import annotations


class BingxError(Exception):
    """Base of every error raised by the BingX layer."""

    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        http_status: int | None = None,
        endpoint: str | None = None,
        retryable: bool | None = None,
    ) -> None:
        self.code = code
        self.http_status = http_status
        self.endpoint = endpoint
        self.server_message = message
        if retryable is not None:
            self.retryable = retryable
        super().__init__(self._describe(message))

    def _describe(self, message: str) -> str:
        parts = []
        if self.code is not None:
            parts.append(f"BingX code {self.code}")
        if self.http_status is not None and self.http_status != 200:
            parts.append(f"HTTP {self.http_status}")
        if self.endpoint:
            parts.append(self.endpoint)
        prefix = f"[{', '.join(parts)}] " if parts else ""
        return f"{prefix}{message}"


# --- transport -------------------------------------------------------------------------------


class BingxNetworkError(BingxError):
    """Connection failure or timeout: the request may or may not have reached BingX."""

    retryable = True


class BingxServerError(BingxError):
    """HTTP 5xx, or a BingX 'system busy/internal error' code: outcome unknown for writes."""

    retryable = True


class BingxResponseError(BingxError):
    """The response could not be understood (not JSON, unexpected shape)."""


# --- auth ------------------------------------------------------------------------------------


class BingxAuthError(BingxError):
    """The API key is missing, wrong, lacks permission, or the IP is not whitelisted."""


class BingxSignatureError(BingxAuthError):
    """100001 / 100412: the signature does not match (wrong secret or a signing bug)."""


class BingxTimestampError(BingxError):
    """100421: the request timestamp is outside recvWindow of BingX time (clock drift)."""

    retryable = True


# --- limits ----------------------------------------------------------------------------------


class BingxRateLimitError(BingxError):
    """100410 or HTTP 429/418: too many requests; wait until the window resets."""

    retryable = True

    def __init__(self, message: str, *, retry_after_s: float | None = None, **kwargs: object) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message, **kwargs)  # type: ignore[arg-type]


class BingxFirewallBlockError(BingxRateLimitError):
    """HTTP 403 without a BingX code: the firewall refuses this IP (usually for 5 minutes)."""


# --- business --------------------------------------------------------------------------------


class BingxInvalidParameterError(BingxError):
    """The request was refused as invalid (bad symbol, mode mismatch, precision, minimums...)."""


class BingxInsufficientMarginError(BingxError):
    """Not enough margin or available balance for the order."""


class BingxNoPositionError(BingxError):
    """There is no position to close / reduce."""


class BingxOrderNotFoundError(BingxError):
    """The exchange says the order does not exist (a *confirmed* absence)."""


class BingxDuplicateClientOrderIdError(BingxError):
    """The client order id was already used: an order with this id exists on the exchange."""


class BingxListenKeyNotFoundError(BingxError):
    """The listen key is unknown or expired (HTTP 404 on PUT/DELETE userDataStream)."""


class BingxListenKeyNotExtendedError(BingxListenKeyNotFoundError):
    """HTTP 204 on the extend call: BingX says "no parameters" and did not extend the key."""


class BingxUnknownError(BingxError):
    """A BingX code this layer has no special handling for."""


# --- local (never sent) ----------------------------------------------------------------------


class OrderValidationError(BingxInvalidParameterError):
    """Refused locally before sending: below minimum quantity/notional, bad client id, etc."""


class OrderStateUnknownError(BingxError):
    """A placement's outcome could not be established. Stop opening positions and alert a human."""

    def __init__(self, message: str, *, client_order_id: str, symbol: str, **kwargs: object) -> None:
        self.client_order_id = client_order_id
        self.symbol = symbol
        super().__init__(message, **kwargs)  # type: ignore[arg-type]


# --- code table ------------------------------------------------------------------------------

SIGNATURE_CODES = frozenset({100001, 100412})
AUTH_CODES = frozenset({100413, 100004, 100419, 100414})
RATE_LIMIT_CODES = frozenset({100410})
TIMESTAMP_CODES = frozenset({100421})
INSUFFICIENT_MARGIN_CODES = frozenset({101204, 101206, 101212, 101253, 100202})
NO_POSITION_CODES = frozenset({101205, 80017})
ORDER_NOT_FOUND_CODES = frozenset({80016, 109421})
# "Order not exist / request failed" (doc section 7): a confirmed absence only when the message says so.
AMBIGUOUS_NOT_FOUND_CODES = frozenset({109414})
DUPLICATE_CLIENT_ID_CODES = frozenset({101481, 109201})
INVALID_PARAMETER_CODES = frozenset(
    {100400, 80014, 109400, 110400, 101400, 101211, 101215, 101290, 101414, 101415, 101209, 109425,
     110406, 110407, 110411, 110412, 110413, 110414, 110422, 110425, 104103, 109401, 80013, 101419, 80018}
)
# 101209 has two documented meanings: "max position value for this leverage" (a rejection) or, in an older
# list, "same order number submitted twice within 1 s" (the order exists): place_order looks it up first.
AMBIGUOUS_REJECTION_CODES = frozenset({101209})
# "System busy / internal error / RPC timeout": the request may or may not have been executed.
SERVER_BUSY_CODES = frozenset({100500, 80012, 101500, 109500, 110500, 80001, 80019})

# Plain words for the codes a human most often has to act on (doctor, chat alerts).
PLAIN_WORDS: dict[int, str] = {
    100001: "BingX rejected the request signature: the API secret is wrong (or does not belong to this API key).",
    100412: "The request reached BingX without a signature.",
    100413: "BingX does not recognise the API key: check the key, or that it was created for this environment "
    "(production vs VST).",
    100004: "The API key lacks a permission this action needs (enable Perpetual Futures trading for the key).",
    100419: "This machine's IP address is not on the API key's whitelist.",
    100414: "The BingX account is restricted (risk control); check the account on the website.",
    100421: "The clock of this machine is too far from BingX time even after resynchronising.",
    100410: "BingX rate limit reached; requests are paused until the window resets.",
}


def _says_not_found(lowered_message: str) -> bool:
    return "not exist" in lowered_message or "not found" in lowered_message


def _says_duplicate_client_id(lowered_message: str) -> bool:
    return "clientorderid" in lowered_message and ("repeat" in lowered_message or "unique" in lowered_message)


def _class_for(code: int, lowered_message: str) -> tuple[type[BingxError], str]:
    """The exception class for ``code`` and its default message.

    Known codes decide first; text heuristics only refine a validation code or classify an
    unknown code. (A busy code whose message happens to mention a missing order must stay
    "outcome unknown", never become a confirmed absence.)
    """
    if code in SIGNATURE_CODES:
        return BingxSignatureError, "signature verification failed"
    if code in AUTH_CODES:
        return BingxAuthError, "authentication failed"
    if code in RATE_LIMIT_CODES:
        return BingxRateLimitError, "rate limit exceeded"
    if code in TIMESTAMP_CODES:
        return BingxTimestampError, "timestamp mismatch"
    if code in SERVER_BUSY_CODES:
        return BingxServerError, "BingX is busy"
    if code in AMBIGUOUS_NOT_FOUND_CODES:
        # 109414 is "order not exist / request failed": only the first reading is a confirmed absence.
        if "order" in lowered_message and _says_not_found(lowered_message):
            return BingxOrderNotFoundError, "order does not exist"
        return BingxServerError, "request failed (outcome unknown)"
    if code in INSUFFICIENT_MARGIN_CODES:
        return BingxInsufficientMarginError, "insufficient margin"
    if code in NO_POSITION_CODES:
        return BingxNoPositionError, "no position"
    if code in ORDER_NOT_FOUND_CODES:
        return BingxOrderNotFoundError, "order does not exist"
    if code in DUPLICATE_CLIENT_ID_CODES:
        return BingxDuplicateClientOrderIdError, "duplicate client order id"
    # 101400 is also used for "clientOrderID unique check failed" (observed on VST).
    if _says_duplicate_client_id(lowered_message):
        return BingxDuplicateClientOrderIdError, "duplicate client order id"
    if code in INVALID_PARAMETER_CODES:
        return BingxInvalidParameterError, "invalid parameter"
    if "order" in lowered_message and _says_not_found(lowered_message):
        return BingxOrderNotFoundError, "order does not exist"
    return BingxUnknownError, "unknown error"


def error_from_code(
    code: int, message: str, *, http_status: int | None = None, endpoint: str | None = None
) -> BingxError:
    """Build the right exception for a non-zero BingX ``code``."""
    cls, default = _class_for(code, message.lower())
    return cls(message or default, code=code, http_status=http_status, endpoint=endpoint)


def plain_words(error: BaseException) -> str:
    """A sentence a non-programmer can act on, for doctor output and chat alerts."""
    if isinstance(error, BingxError) and error.code in PLAIN_WORDS:
        return f"{PLAIN_WORDS[error.code]} (BingX code {error.code})"
    if isinstance(error, BingxNetworkError):
        return f"Could not reach BingX: {error.server_message}"
    if isinstance(error, BingxAuthError):
        return f"BingX refused the credentials: {error}"
    return str(error)
