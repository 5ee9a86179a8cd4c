"""BingX hosts: production vs VST (demo) and explicit overrides (used for the local simulator)."""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit, urlunsplit

PROD_REST_URL = "https://open-api.bingx.com"
PROD_WS_URL = "wss://open-api-swap.bingx.com/swap-market"
VST_REST_URL = "https://open-api-vst.bingx.com"
# UNCONFIRMED for the account stream (protocol notes section 1); used for both streams, as other clients do.
VST_WS_URL = "wss://vst-open-api-ws.bingx.com/swap-market"


def resolve_urls(testnet: bool, rest_url: str | None = None, ws_url: str | None = None) -> tuple[str, str]:
    """Return ``(rest_base, ws_url)``.

    ``testnet`` picks the VST hosts; a non-empty ``rest_url``/``ws_url`` overrides the
    respective host whatever ``testnet`` says (the simulator runs on 127.0.0.1).
    """
    rest = rest_url or (VST_REST_URL if testnet else PROD_REST_URL)
    ws = ws_url or (VST_WS_URL if testnet else PROD_WS_URL)
    return rest.rstrip("/"), ws.rstrip("/")


def account_stream_url(ws_url: str, listen_key: str) -> str:
    """The account-stream URL: the market-stream URL with ``?listenKey=<key>`` (kept query preserved)."""
    parts = urlsplit(ws_url)
    query = parts.query + ("&" if parts.query else "") + urlencode({"listenKey": listen_key})
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))
