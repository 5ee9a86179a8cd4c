"""Admin HTTP API under ``/_sim/`` (unsigned, answered only to loopback clients).

``GET /_sim/state``
    The exchange's full state: clock, account summary, balances, per-symbol settings,
    positions, every order (open and finished), fills, income, listen keys, markets,
    faults and WebSocket counters. Tests check the bot against this, not against the
    bot's own view. Money is exact (strings, 1e-8); ids are unquoted integers.

``POST /_sim/faults`` with a JSON object
    Sets fault switches (see ``faults.py``): ``rest_5xx_fraction``, ``rest_5xx_status``,
    ``rest_5xx_after``, ``hang_next_orders``, ``latency_ms``, ``latency_jitter_ms``,
    ``clock_skew_ms``, ``force_rate_limit_s``, ``rate_limit_no_headers``, ``firewall_block_s``,
    ``reject_next_order_code``,
    ``reject_next_orders`` (list of codes or ``{code, msg}``), ``ws_drop_every_s``,
    ``seed``; ``{"clear": true}`` switches everything off. Answers the switches now in force;
    an unknown key or bad value answers HTTP 400 and changes nothing.

``POST /_sim/ws/drop``
    Drops every WebSocket connection now (``{"dropped": n}``).

``POST /_sim/clock`` with a JSON object
    ``{"action": "pause"}``, ``{"action": "resume"}``, ``{"action": "speed", "speed": 10 | "max"}``,
    ``{"action": "advance", "to_ms": T}`` (replay up to T now), ``{"action": "advance", "candles": N}``
    (until N more candles of the first market have closed), ``{"action": "step", "steps": N}``
    (the next N trades). Answers the clock state.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .protocol import dumps

if TYPE_CHECKING:  # pragma: no cover
    from .server import SimulatorServer

log = logging.getLogger(__name__)

LOOPBACK = frozenset({"127.0.0.1", "::1", "::ffff:127.0.0.1"})


def _reply(body: Any, status: int = 200) -> web.Response:
    return web.Response(text=dumps(body), status=status, content_type="application/json")


async def _json_body(request: web.Request) -> dict[str, Any]:
    text = await request.text()
    if not text.strip():
        return {}
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError("body must be a JSON object")
    return value


def add_admin_routes(app: web.Application, sim: SimulatorServer) -> None:
    """Register the ``/_sim/`` routes for ``sim`` on ``app``."""

    def guard(request: web.Request) -> web.Response | None:
        if request.remote not in LOOPBACK:
            return _reply({"error": "admin API is loopback only"}, 403)
        return None

    async def state(request: web.Request) -> web.Response:
        return guard(request) or _reply(sim.state())

    async def faults(request: web.Request) -> web.Response:
        denied = guard(request)
        if denied:
            return denied
        try:
            body = await _json_body(request)
            if body.pop("clear", False):
                sim.faults.clear()
            sim.faults.update(body)
        except (ValueError, TypeError, KeyError) as exc:
            return _reply({"error": str(exc)}, 400)
        log.info("fault switches changed: %s", sorted(body))
        return _reply(sim.faults.snapshot())

    async def ws_drop(request: web.Request) -> web.Response:
        return guard(request) or _reply({"dropped": sim.drop_websockets()})

    async def clock(request: web.Request) -> web.Response:
        denied = guard(request)
        if denied:
            return denied
        try:
            body = await _json_body(request)
            action = body.get("action")
            if action == "pause":
                sim.pause()
            elif action == "resume":
                sim.resume()
            elif action == "speed":
                speed = body.get("speed")
                sim.set_speed(None if speed in (None, "max") else float(speed))
            elif action == "advance":
                if "to_ms" in body:
                    await sim.advance(to_ms=int(body["to_ms"]))
                elif "candles" in body:
                    await sim.advance(candles=int(body["candles"]))
                else:
                    raise ValueError("advance needs to_ms or candles")
            elif action == "step":
                await sim.advance(steps=int(body.get("steps", 1)))
            elif action is not None:
                raise ValueError(f"unknown clock action {action!r}")
        except (ValueError, TypeError) as exc:
            return _reply({"error": str(exc)}, 400)
        return _reply(sim.clock_state())

    app.router.add_get("/_sim/state", state)
    app.router.add_post("/_sim/faults", faults)
    app.router.add_post("/_sim/ws/drop", ws_drop)
    app.router.add_post("/_sim/clock", clock)
