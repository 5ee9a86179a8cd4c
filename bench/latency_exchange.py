"""The exchange side of the tick-to-order benchmark: the BingX simulator in its own process, with a probe.

``bench/bench_latency.py`` starts this script, so the simulator's own work (encoding and gzip'ing
frames, parsing HTTP, checking signatures, matching) runs on another core, as a real exchange's
does on another machine, and is not charged to the bot. Two timestamps are taken here with
``time.perf_counter_ns`` (CLOCK_MONOTONIC, one clock for every process of the machine): when the
simulator publishes a trade frame, and when its matching engine receives an entry order.

A second HTTP server on 127.0.0.1 (``/_bench/``) lets the benchmark drive the replay:

``POST /_bench/step`` ``{"delay_ms": D}``
    Publish the next trade D ms from now and answer at once, so no control traffic reaches the
    bot while it reacts to the frame.
``GET /_bench/probe``
    ``{"publishes_ns", "entries_ns", "last_trade_ms", "server_time_ms", "stepping"}``: when the last
    frames were published (trade and kline frames of a step, and the kline snapshots the simulator
    pushes every second of wall time), when each entry order arrived.

The simulator's own admin API (``/_sim/clock``) advances the replay between samples.

    python bench/latency_exchange.py --file F --last-index N --start-ms T --warmup W [--cpu 1]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import signal
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.market.candle import read_candles_csv  # noqa: E402
from engine.simulator import MarketSpec, SimulatorServer  # noqa: E402
from engine.simulator.rest import RestApi  # noqa: E402

MARKET = ROOT.parent / "shared" / "data" / "market"
READY = "LATENCY EXCHANGE READY"


def _is_entry(client_order_id: str) -> bool:
    return client_order_id.lower().startswith("en")  # the bot's entry ids (new_client_order_id("en"))


class Probe:
    """Timestamps of the simulator's published frames and of the entry orders it receives."""

    received_ns: list[int] = []  # an entry's request reached the REST handler (class-level: set before start)

    def __init__(self, sim: SimulatorServer) -> None:
        self.publishes_ns: deque[int] = deque(maxlen=256)
        self.entries_ns: list[int] = []
        publish = sim.hub.publish
        place = sim.engine.place

        def timed_publish(topic: str, payload: dict[str, Any]) -> None:
            self.publishes_ns.append(time.perf_counter_ns())
            publish(topic, payload)

        def timed_place(params: dict[str, str], *args: Any, **kwargs: Any) -> Any:
            cid = params.get("clientOrderID") or params.get("clientOrderId") or ""
            if _is_entry(str(cid)) and not kwargs.get("test"):
                self.entries_ns.append(time.perf_counter_ns())
            return place(params, *args, **kwargs)

        # instance attributes shadow the bound methods: the hub and the REST layer look them up per call
        sim.hub.publish = timed_publish  # type: ignore[method-assign]
        sim.engine.place = timed_place  # type: ignore[method-assign]


def time_rest_receipt() -> None:
    """Timestamp each entry request as the REST handler gets it (before the simulator checks and matches it)."""
    dispatch = RestApi.dispatch

    async def timed_dispatch(self: RestApi, request: web.Request) -> web.StreamResponse:
        if request.method == "POST" and request.path.endswith("/trade/order") and _is_entry(
                request.query.get("clientOrderID", "") or request.query.get("clientOrderId", "")):
            Probe.received_ns.append(time.perf_counter_ns())
        return await dispatch(self, request)

    RestApi.dispatch = timed_dispatch  # type: ignore[method-assign]


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
        return web.json_response({"publishes_ns": list(probe.publishes_ns), "entries_ns": probe.entries_ns,
                                  "received_ns": Probe.received_ns,
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
