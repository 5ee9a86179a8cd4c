"""Fault injection switches (set from tests directly, the CLI, or ``POST /_sim/faults``).

| switch | effect |
|---|---|
| ``rest_5xx_fraction`` | that fraction of ``/openApi`` calls is answered with a 5xx HTML page |
| ``rest_5xx_status`` | the status used (default: one of 500/502/503/504 at random) |
| ``rest_5xx_after`` | the request is processed *before* the 5xx is sent (outcome unknown to the client) |
| ``hang_next_orders`` | the next N order placements are executed but never answered |
| ``latency_ms`` / ``latency_jitter_ms`` | delay before each REST answer |
| ``clock_skew_ms`` | added to the server clock (server time, recvWindow check, event times) |
| ``force_rate_limit_s`` | every ``/openApi`` call answers 100410 for the next N seconds |
| ``rate_limit_no_headers`` | 100410 answers carry no ``X-RateLimit-*`` headers (presence and unit undocumented) |
| ``firewall_block_s`` | every ``/openApi`` call answers a bare HTTP 403 (firewall block) for the next N seconds |
| ``reject_next_orders`` | the next order placements fail with the given codes (``reject_next_order_code`` adds one) |
| ``ws_drop_every_s`` | every WebSocket connection is dropped every N seconds (0 = off) |

Random choices use a seeded generator (``seed``) so a test run is reproducible.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

from .protocol import ERROR_MESSAGES


@dataclass
class Faults:
    """The live fault switches."""

    rest_5xx_fraction: float = 0.0
    rest_5xx_status: int | None = None
    rest_5xx_after: bool = False
    hang_next_orders: int = 0
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    clock_skew_ms: int = 0
    rate_limited_until: float = 0.0  # time.monotonic() deadline of a forced 100410 period
    rate_limit_no_headers: bool = False
    firewall_until: float = 0.0  # time.monotonic() deadline of a forced HTTP 403 period
    reject_next_orders: list[tuple[int, str]] = field(default_factory=list)
    ws_drop_every_s: float = 0.0
    seed: int = 20240101
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    # ---- queries used by the server -----------------------------------------------------------
    def pick_5xx(self) -> int | None:
        """The 5xx status to answer this request with, or None."""
        if self.rest_5xx_fraction <= 0 or self._rng.random() >= self.rest_5xx_fraction:
            return None
        return self.rest_5xx_status or self._rng.choice((500, 502, 503, 504))

    def latency_s(self) -> float:
        """Delay to add to this REST answer, in seconds."""
        if self.latency_ms <= 0 and self.latency_jitter_ms <= 0:
            return 0.0
        return max(0.0, self.latency_ms + self._rng.uniform(0, self.latency_jitter_ms)) / 1000.0

    def rate_limit_forced(self) -> bool:
        """Whether a forced 100410 period is running."""
        return time.monotonic() < self.rate_limited_until

    def force_rate_limit(self, seconds: float) -> None:
        """Answer 100410 to everything for ``seconds``."""
        self.rate_limited_until = time.monotonic() + max(0.0, seconds)

    def firewall_forced(self) -> bool:
        """Whether a forced HTTP 403 (firewall) period is running."""
        return time.monotonic() < self.firewall_until

    def force_firewall_block(self, seconds: float) -> None:
        """Answer a bare HTTP 403 to everything for ``seconds``."""
        self.firewall_until = time.monotonic() + max(0.0, seconds)

    def take_reject(self) -> tuple[int, str] | None:
        """Consume the next queued order rejection."""
        return self.reject_next_orders.pop(0) if self.reject_next_orders else None

    def take_hang(self) -> bool:
        """Consume one "accept but never answer" placement."""
        if self.hang_next_orders > 0:
            self.hang_next_orders -= 1
            return True
        return False

    # ---- admin --------------------------------------------------------------------------------
    def update(self, body: dict[str, Any]) -> None:
        """Apply a JSON object of switches; unknown keys or bad values raise ``ValueError`` (nothing applied)."""
        staged: dict[str, Any] = {}
        rejects: list[tuple[int, str]] = []
        force_s: float | None = None
        firewall_s: float | None = None
        for key, value in body.items():
            if key == "rest_5xx_fraction":
                fraction = float(value)
                if not 0.0 <= fraction <= 1.0:
                    raise ValueError("rest_5xx_fraction must be within [0, 1]")
                staged[key] = fraction
            elif key == "rest_5xx_status":
                status = None if value in (None, 0) else int(value)
                if status is not None and not 500 <= status <= 599:
                    raise ValueError("rest_5xx_status must be a 5xx status")
                staged[key] = status
            elif key in ("rest_5xx_after", "rate_limit_no_headers"):
                if not isinstance(value, bool):
                    raise ValueError(f"{key} must be true or false")
                staged[key] = value
            elif key in ("hang_next_orders",):
                count = int(value)
                if count < 0:
                    raise ValueError(f"{key} must be >= 0")
                staged[key] = count
            elif key in ("latency_ms", "latency_jitter_ms", "ws_drop_every_s"):
                number = float(value)
                if number < 0:
                    raise ValueError(f"{key} must be >= 0")
                staged[key] = number
            elif key == "clock_skew_ms":
                staged[key] = int(value)
            elif key == "force_rate_limit_s":
                force_s = float(value)
                if force_s < 0:
                    raise ValueError("force_rate_limit_s must be >= 0")
            elif key == "firewall_block_s":
                firewall_s = float(value)
                if firewall_s < 0:
                    raise ValueError("firewall_block_s must be >= 0")
            elif key == "reject_next_order_code":
                code = int(value)
                rejects.append((code, ERROR_MESSAGES.get(code, "order rejected")))
            elif key == "reject_next_orders":
                if not isinstance(value, list):
                    raise ValueError("reject_next_orders must be a list of codes or {code, msg} objects")
                for item in value:
                    if isinstance(item, dict):
                        code = int(item["code"])
                        rejects.append((code, str(item.get("msg") or ERROR_MESSAGES.get(code, "order rejected"))))
                    else:
                        code = int(item)
                        rejects.append((code, ERROR_MESSAGES.get(code, "order rejected")))
            elif key == "seed":
                staged["_seed"] = int(value)
            else:
                raise ValueError(f"unknown fault switch {key!r}")
        for key, value in staged.items():
            if key == "_seed":
                self.seed = value
                self._rng = random.Random(value)
            else:
                setattr(self, key, value)
        self.reject_next_orders.extend(rejects)
        if force_s is not None:
            self.force_rate_limit(force_s)
        if firewall_s is not None:
            self.force_firewall_block(firewall_s)

    def clear(self) -> None:
        """Switch every fault off."""
        self.rest_5xx_fraction = 0.0
        self.rest_5xx_status = None
        self.rest_5xx_after = False
        self.hang_next_orders = 0
        self.latency_ms = 0.0
        self.latency_jitter_ms = 0.0
        self.clock_skew_ms = 0
        self.rate_limited_until = 0.0
        self.rate_limit_no_headers = False
        self.firewall_until = 0.0
        self.reject_next_orders.clear()
        self.ws_drop_every_s = 0.0

    def snapshot(self) -> dict[str, Any]:
        """The switches as JSON."""
        return {
            "rest_5xx_fraction": self.rest_5xx_fraction,
            "rest_5xx_status": self.rest_5xx_status,
            "rest_5xx_after": self.rest_5xx_after,
            "hang_next_orders": self.hang_next_orders,
            "latency_ms": self.latency_ms,
            "latency_jitter_ms": self.latency_jitter_ms,
            "clock_skew_ms": self.clock_skew_ms,
            "force_rate_limit_remaining_s": round(max(0.0, self.rate_limited_until - time.monotonic()), 3),
            "rate_limit_no_headers": self.rate_limit_no_headers,
            "firewall_block_remaining_s": round(max(0.0, self.firewall_until - time.monotonic()), 3),
            "reject_next_orders": [{"code": c, "msg": m} for c, m in self.reject_next_orders],
            "ws_drop_every_s": self.ws_drop_every_s,
            "seed": self.seed,
        }
