"""The floor under tick-to-order on this machine: the same loopback with no bot logic at all.

A client pinned to one core (as ``bench_latency.py`` pins the bot) reads a gzip'd kline frame with
the same libraries the bot uses (websockets, zlib, json), signs a query with HMAC-SHA256 and POSTs
it with aiohttp. Nothing else: no feed, strategy, risk gate or database. The server (aiohttp, in its
own process on the other core, like the simulator) timestamps its socket write of the frame and the
arrival of the POST's first bytes, the points ``bench_latency.py`` measures between. As there, a
second passes before each frame, so the client is as cold as the bot is at a candle close.

What the bot's tick-to-order adds on top of this figure is its own work: the feed and the candle,
the strategy, the risk gate, the intent commit on SQLite's thread, the order's validation.

    .venv/bin/python bench/latency_floor.py [--frames 40]

Merged into ``bench/results.json`` under ``"latency_floor"``.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import hashlib
import hmac
import json
import os
import statistics
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web, web_protocol
from websockets.asyncio.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_backtest import merge_results  # noqa: E402
from bench_latency import BOT_CPU, BUDGET_IDLE_S, EXCHANGE_CPU, percentile  # noqa: E402

READY = "FLOOR SERVER READY"
FRAME = gzip.compress(json.dumps({"dataType": "XRP-USDT@kline_1m", "data": [
    {"c": "0.5123", "o": "0.5101", "h": "0.5130", "l": "0.5099", "v": "18734", "T": 1_700_000_000_000}]}).encode())


async def serve() -> None:
    """The server side: ``/ws`` (the frame), ``/order`` (the POST), ``/fire`` and ``/times`` for the driver."""
    written: list[int] = []
    arrived: list[int] = []
    sockets: list[web.WebSocketResponse] = []
    data_received = web_protocol.RequestHandler.data_received

    def timed_data_received(self: web_protocol.RequestHandler, data: bytes) -> None:
        if data.startswith(b"POST /order"):
            arrived.append(time.perf_counter_ns())
        data_received(self, data)

    web_protocol.RequestHandler.data_received = timed_data_received  # type: ignore[method-assign]

    async def ws(request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        sockets.append(socket)
        async for _ in socket:
            pass
        return socket

    async def order(request: web.Request) -> web.Response:
        return web.json_response({"code": 0, "msg": "", "data": {"order": {"orderId": 1}}})

    async def fire(request: web.Request) -> web.Response:
        await sockets[-1].send_bytes(FRAME)  # handed to the transport before it returns
        written.append(time.perf_counter_ns())
        return web.json_response({})

    async def times(request: web.Request) -> web.Response:
        return web.json_response({"written": written, "arrived": arrived})

    app = web.Application()
    app.router.add_get("/ws", ws)
    app.router.add_post("/order", order)
    app.router.add_post("/fire", fire)
    app.router.add_get("/times", times)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(f"{READY} port={runner.addresses[0][1]}", flush=True)
    await asyncio.Event().wait()


async def drive(frames: int) -> list[float]:
    """Start the server, react to ``frames`` frames, return the write-to-arrival times in ms."""
    cpu = ["--cpu", str(EXCHANGE_CPU)] if (os.cpu_count() or 1) > 1 else []
    proc = await asyncio.create_subprocess_exec(sys.executable, __file__, "--serve", *cpu, stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), timeout=30)).decode()
    if not line.startswith(READY):
        proc.kill()
        raise RuntimeError(f"the floor server did not start: {line!r}")
    base = f"127.0.0.1:{line.split('port=')[1].strip()}"
    secret = b"bench-secret"
    try:
        async with aiohttp.ClientSession() as http, aiohttp.ClientSession() as control, \
                connect(f"ws://{base}/ws", compression=None, ping_interval=None) as socket:

            async def react() -> None:
                while True:
                    frame = json.loads(zlib.decompressobj(31).decompress(await socket.recv()))
                    close = frame["data"][0]["c"]
                    query = f"symbol=XRP-USDT&side=BUY&type=MARKET&quantity=10&price={close}&timestamp={int(time.time() * 1000)}"
                    signature = hmac.new(secret, query.encode(), hashlib.sha256).hexdigest()
                    async with http.post(f"http://{base}/order?{query}&signature={signature}", headers={"X-BX-APIKEY": "k"}) as resp:
                        await resp.read()

            reader = asyncio.create_task(react())
            for _ in range(frames):
                await asyncio.sleep(BUDGET_IDLE_S)
                async with control.post(f"http://{base}/fire") as resp:
                    await resp.read()
            await asyncio.sleep(0.2)
            reader.cancel()
            async with control.get(f"http://{base}/times") as resp:
                times: dict[str, Any] = await resp.json()
    finally:
        proc.kill()
        await proc.wait()
    return [(arrived - written) / 1e6 for written, arrived in zip(times["written"], times["arrived"])]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        if args.cpu is not None:
            os.sched_setaffinity(0, {args.cpu})
        asyncio.run(serve())
        return 0
    os.sched_setaffinity(0, {BOT_CPU})
    samples = sorted(asyncio.run(drive(args.frames)))
    figures = {"samples": len(samples), "p50_ms": round(percentile(samples, 0.50), 3),
               "p99_ms": round(percentile(samples, 0.99), 3), "min_ms": round(samples[0], 3),
               "mean_ms": round(statistics.fmean(samples), 3),
               "path": "server writes a gzip'd frame -> websockets -> zlib + json -> HMAC-signed query -> aiohttp POST -> "
                       "its first bytes reach the server; no bot logic",
               "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    merge_results("latency_floor", figures)
    print(f"loopback floor over {len(samples)} frames: p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} ms, "
          f"min {figures['min_ms']} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
