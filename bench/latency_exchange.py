"""The exchange side of the tick-to-order benchmark: the BingX simulator in its own process, with a probe.

``bench/bench_latency.py`` starts this script, so the simulator's own work (encoding and gzip'ing
frames, parsing HTTP, checking signatures, matching) runs on another core, as a real exchange's
does on another machine, and is not charged to the bot. Timestamps are taken here with
``time.perf_counter_ns`` (CLOCK_MONOTONIC, one clock for every process of the machine):

- a market frame: when the simulator publishes it (before encoding and gzip) and when its bytes are
  written to the bot's socket (``send_bytes`` has handed them to the transport);
- an entry order: when its first bytes reach the HTTP server's protocol (``data_received``, before
  any parsing), when the REST handler gets the parsed request, and when the matching engine gets it.

A second HTTP server on 127.0.0.1 (``/_bench/``) lets the benchmark drive the replay:

``POST /_bench/step`` ``{"delay_ms": D}``
    Publish the next trade D ms from now and answer at once, so no control traffic reaches the
    bot while it reacts to the frame.
``GET /_bench/probe``
    ``{"written_ns", "wire_in_ns", "received_ns", "entries_ns", "last_trade_ms",
    "server_time_ms", "stepping"}``: the frame and order timestamps above (``written_ns`` maps a
    frame's publish time to its write time; frames are the trade and kline frames of a step and the
    kline snapshots the simulator pushes every second of wall time).

The simulator's own admin API (``/_sim/clock``) advances the replay between samples.

    python bench/latency_exchange.py --file F --last-index N --start-ms T --warmup W [--cpu 1]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

from aiohttp import web, web_protocol

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.market.candle import read_candles_csv  # noqa: E402
from engine.simulator import MarketSpec, SimulatorServer  # noqa: E402
from engine.simulator.rest import RestApi  # noqa: E402
from engine.simulator.ws import Connection  # noqa: E402

MARKET = ROOT.parent / "shared" / "data" / "market"
READY = "LATENCY EXCHANGE READY"
WRITES_KEPT = 256


# the request line of an entry placement: POST .../trade/order?...clientOrderId=en... (either spelling of the key)
_ENTRY_REQUEST = re.compile(rb"POST [^ ?]*/trade/order\?[^ ]*clientOrderI[dD]=en", re.IGNORECASE)


def _is_entry(client_order_id: str) -> bool:
    return client_order_id.lower().startswith("en")  # the bot's entry ids (new_client_order_id("en"))


class _StampedFrame(bytes):
    """A published frame that remembers when it was published (to pair it with its socket write)."""

    published_ns: int


class Probe:
    """Timestamps of the simulator's frames and of the entry orders it receives.

    Per frame: when the simulator published it (before encoding and gzip) and when its bytes were
    written to the bot's socket. Per entry order: when its first bytes reached the HTTP server's
    protocol (before any parsing), when the REST handler got the parsed request, and when the
    matching engine got it (after the simulator's checks).
    """

    received_ns: list[int] = []  # an entry's request reached the REST handler (class-level: set before start)
    wire_in_ns: list[int] = []  # an entry's first bytes reached the server protocol (class-level, like received_ns)

    def __init__(self, sim: SimulatorServer) -> None:
        self.written_ns: dict[int, int] = {}  # publish time -> when the frame was written to the socket
        self.entries_ns: list[int] = []
        publish = sim.hub.publish
        place = sim.engine.place
        publishing: list[int] = []

        def timed_publish(topic: str, payload: dict[str, Any]) -> None:
            publishing.append(time.perf_counter_ns())
            try:
                publish(topic, payload)
            finally:
                publishing.pop()

        def timed_place(params: dict[str, str], *args: Any, **kwargs: Any) -> Any:
            cid = params.get("clientOrderID") or params.get("clientOrderId") or ""
            if _is_entry(str(cid)) and not kwargs.get("test"):
                self.entries_ns.append(time.perf_counter_ns())
            return place(params, *args, **kwargs)

        queue_frame = Connection.send

        def stamped_send(conn: Connection, frame: bytes) -> None:
            if publishing:  # a market frame: tag it, and time the socket writes of its connection
                frame = _StampedFrame(frame)
                frame.published_ns = publishing[-1]
                if not getattr(conn.ws, "_bench_timed", False):
                    conn.ws.send_bytes = self._timed_send(conn.ws.send_bytes)  # type: ignore[method-assign]
                    conn.ws._bench_timed = True  # type: ignore[attr-defined]
            queue_frame(conn, frame)

        # instance attributes shadow the bound methods: the hub and the REST layer look them up per call
        sim.hub.publish = timed_publish  # type: ignore[method-assign]
        sim.engine.place = timed_place  # type: ignore[method-assign]
        Connection.send = stamped_send  # type: ignore[method-assign]

    def _timed_send(self, send_bytes: Any) -> Any:
        async def timed(data: bytes, *args: Any, **kwargs: Any) -> None:
            await send_bytes(data, *args, **kwargs)  # aiohttp hands the frame to the transport before it returns
            if isinstance(data, _StampedFrame):
                self.written_ns.setdefault(data.published_ns, time.perf_counter_ns())
                if len(self.written_ns) > 2 * WRITES_KEPT:  # only the last few frames matter
                    for key in sorted(self.written_ns)[:-WRITES_KEPT]:
                        del self.written_ns[key]
        return timed


def time_rest_receipt() -> None:
    """Timestamp each entry request as its bytes arrive and as the REST handler gets it."""
    dispatch = RestApi.dispatch
    data_received = web_protocol.RequestHandler.data_received

    async def timed_dispatch(self: RestApi, request: web.Request) -> web.StreamResponse:
        if request.method == "POST" and request.path.endswith("/trade/order") and _is_entry(
                request.query.get("clientOrderID", "") or request.query.get("clientOrderId", "")):
            Probe.received_ns.append(time.perf_counter_ns())
        return await dispatch(self, request)

    def timed_data_received(self: web_protocol.RequestHandler, data: bytes) -> None:
        now = time.perf_counter_ns()
        if data.startswith(b"POST ") and _ENTRY_REQUEST.match(data):
            Probe.wire_in_ns.append(now)
        data_received(self, data)

    RestApi.dispatch = timed_dispatch  # type: ignore[method-assign]
    web_protocol.RequestHandler.data_received = timed_data_received  # type: ignore[method-assign]


async def serve(args: argparse.Namespace) -> None:
    """Run the simulator and the ``/_bench/`` control server until SIGTERM."""
    time_rest_receipt()
    candles = read_candles_csv(MARKET / args.file)[: args.last_index + 1]
    sim = SimulatorServer([MarketSpec(args.symbol, candles)], api_key=args.key, api_secret=args.secret, paused=True,
                          start_ms=args.start_ms, warmup_minutes=args.warmup, rate_limit_scale=0)
    await sim.start()
    # the replayed file is hundreds of thousands of objects: without this, the simulator's own garbage collections
    # (tens of ms) would be timed as the bot's latency
    gc.collect()
    gc.freeze()
    probe = Probe(sim)
    market = sim.markets[args.symbol]
    stepping: set[asyncio.Task[Any]] = set()

    async def step(request: web.Request) -> web.Response:
        body = await request.json()
        delay_s = float(body.get("delay_ms", 20)) / 1000

        async def later() -> None:
            await asyncio.sleep(delay_s)
            await sim.advance(steps=1)

        task = asyncio.create_task(later())
        stepping.add(task)
        task.add_done_callback(stepping.discard)
        return web.json_response({"scheduled": True})

    async def state(request: web.Request) -> web.Response:
        return web.json_response({"entries_ns": probe.entries_ns,
                                  "received_ns": Probe.received_ns, "wire_in_ns": Probe.wire_in_ns,
                                  "written_ns": probe.written_ns,
                                  "last_trade_ms": market.last_trade_ms, "server_time_ms": sim.server_time_ms(),
                                  "stepping": bool(stepping)})

    app = web.Application()
    app.router.add_post("/_bench/step", step)
    app.router.add_get("/_bench/probe", state)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    control_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    print(f"{READY} rest={sim.rest_url} ws={sim.ws_url} control={control_url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
    await sim.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--file", required=True)
    parser.add_argument("--symbol", required=True)
    parser.add_argument("--last-index", type=int, required=True, help="replay the file's candles up to this index")
    parser.add_argument("--start-ms", type=int, required=True)
    parser.add_argument("--warmup", type=int, required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--cpu", type=int, default=None, help="pin this process to one CPU")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
