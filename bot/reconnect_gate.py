"""Entries wait after a stream disconnect until the exchange has been reconciled again.

"After any crash or disconnect it reconciles with the exchange before it trades again": from the
moment a market or account stream is seen down until a reconciliation that STARTED after its
reconnect has succeeded, :meth:`ReconnectGate.block` gives the reason entries are refused. Exits
and stop management never ask it.

Each stream connection (``ReconnectingConnection``) counts its successful connects and raises the
count before it reports itself connected, so there is no moment between a reconnect and the
worker hearing of it in which entries would slip through. A reconciliation reads the total before
it runs (:meth:`connects`) and hands it back when it succeeded (:meth:`covered`): a reconnect
during the run is not covered by it.
"""

from __future__ import annotations

from typing import Any

RECONCILING_REASON = "reconciling after a disconnect"


def stream_connections(runtime: Any) -> list[Any]:
    """The runtime's WebSocket connections: the account stream (live) and every market-stream shard."""
    connections = []
    account = getattr(runtime, "account_stream", None)
    if account is not None:
        connections.append(account.conn)
    market = getattr(runtime, "market_stream", None)
    if market is not None:
        connections.extend(market.connections)
    return connections


class ReconnectGate:
    """The entry gate's first check for one runtime (paper mode: only while a stream is down)."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self._covered = 0  # the total connect count the last successful reconciliation covered

    def block(self) -> str | None:
        """Why entries must wait now, or None. On the tick-to-order path: in-memory reads only."""
        connections = stream_connections(self.runtime)
        for conn in connections:
            if not conn.connected.is_set():
                return f"{RECONCILING_REASON}: the {conn.name} stream is down"
        # every connection's first connect is covered by the start-up reconciliation
        if sum(conn.connect_count for conn in connections) > max(self._covered, len(connections)):
            return f"{RECONCILING_REASON}: waiting for the reconciliation after the reconnect"
        return None

    def connects(self) -> int:
        """The streams' total connect count: read it before a reconciliation starts."""
        return sum(conn.connect_count for conn in stream_connections(self.runtime))

    def covered(self, connects: int) -> None:
        """A reconciliation that started at total ``connects`` succeeded: entries may resume up to there."""
        self._covered = max(self._covered, connects)
