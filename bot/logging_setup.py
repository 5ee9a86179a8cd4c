"""Logging: a readable console, JSON lines to a size-rotated file, and secret redaction.

Redaction is applied to the *formatted* text of every record (message, arguments,
exception traceback, extra fields), at the handler, so no code path, ours or a
library's, can write a registered secret, a Telegram bot token, a Discord webhook URL
or a request signature to any log destination.

The handlers run on a thread of their own (a ``QueueHandler`` on the root logger, a
``QueueListener`` behind it): formatting, redaction and the writes to the terminal and the
file never block the event loop, whose callers only pay for ``msg % args`` and a queue put
(issue 10: log lines sit on the order path). :func:`stop_logging` flushes what is queued; it
runs at exit. A SIGKILL can lose the lines of the last few milliseconds.
"""

from __future__ import annotations

import atexit
import copy
import json
import logging
import logging.handlers
import queue
import re
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

REDACTED = "***"

# Record attributes that are context worth keeping in the JSON line when code passes them via `extra=`.
CONTEXT_KEYS = ("symbol", "strategy", "client_order_id", "order_id", "mode", "component", "event", "trade_id")

# Shapes of secrets we never want in a log even when nobody registered their value.
_PATTERNS = (
    # Telegram bot token, also inside Bot API URLs (https://api.telegram.org/bot<TOKEN>/method).
    re.compile(r"\b\d{5,}:[A-Za-z0-9_-]{30,}\b"),
    # Discord webhook URL: id and token both secret.
    re.compile(r"https?://(?:[a-z]+\.)?discord(?:app)?\.com/api/webhooks/[^\s'\"<>]+", re.IGNORECASE),
    # Signed REST query strings: keep the parameter name, hide the value.
    re.compile(r"(?<=signature=)[0-9a-fA-F]{16,}"),
    # API key header values.
    re.compile(r"(?<=X-BX-APIKEY['\"]: ['\"])[^'\"]+", re.IGNORECASE),
)
# The password inside a URL (a database URL in a driver's error); scheme, user and host stay readable.
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]+:)[^@\s/]+(@)", re.IGNORECASE)


class SecretRegistry:
    """Literal secret values to scrub from log text; thread-safe, grows as configs load."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: tuple[str, ...] = ()

    def register(self, values: Iterable[str]) -> None:
        """Add secrets (values shorter than 4 chars are ignored: they would redact ordinary text)."""
        with self._lock:
            merged = set(self._values) | {v for v in values if v and len(v) >= 4}
            # Longest first so a secret that contains another is replaced whole.
            self._values = tuple(sorted(merged, key=len, reverse=True))

    def clear(self) -> None:
        """Forget every registered value (tests)."""
        with self._lock:
            self._values = ()

    def redact(self, text: str) -> str:
        """Return ``text`` with every registered value and known secret shape replaced."""
        for value in self._values:
            if value in text:
                text = text.replace(value, REDACTED)
        for pattern in _PATTERNS:
            text = pattern.sub(REDACTED, text)
        return _URL_PASSWORD.sub(rf"\g<1>{REDACTED}\g<2>", text)


secrets = SecretRegistry()


class RedactingFormatter(logging.Formatter):
    """Wraps another formatter and scrubs secrets from whatever it produces."""

    def __init__(self, inner: logging.Formatter, registry: SecretRegistry = secrets) -> None:
        super().__init__()
        self._inner = inner
        self._registry = registry

    def format(self, record: logging.LogRecord) -> str:  # noqa: D102 - logging API
        return self._registry.redact(self._inner.format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, context, exception."""

    def format(self, record: logging.LogRecord) -> str:  # noqa: D102 - logging API
        payload: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in CONTEXT_KEYS:
            value = getattr(record, key, None)
            if value is not None:
                payload[key] = value if isinstance(value, (int, float, bool)) else str(value)
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:  # formatted already when the record crossed the queue
            payload["exception"] = record.exc_text
        if record.stack_info:
            payload["stack"] = self.formatStack(record.stack_info)
        return json.dumps(payload, ensure_ascii=False, default=str)


class ConsoleFormatter(logging.Formatter):
    """Readable single line: time, level, logger, message and any context keys."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%Y-%m-%d %H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:  # noqa: D102 - logging API
        text = super().format(record)
        context = [f"{k}={getattr(record, k)}" for k in CONTEXT_KEYS if getattr(record, k, None) is not None]
        if context:
            first, sep, rest = text.partition("\n")
            text = f"{first} [{' '.join(context)}]{sep}{rest}"
        return text


class _ToListener(logging.handlers.QueueHandler):
    """Hands records to the listener thread with their message and traceback already rendered.

    Rendering here, not later, keeps what the record said when it was logged (its arguments may
    change afterwards); the stdlib ``prepare`` would also fold the traceback into the message,
    which would hide it from the JSON ``exception`` field.
    """

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:  # noqa: D102 - logging API
        record = copy.copy(record)
        record.msg = record.getMessage()
        record.args = None
        if record.exc_info:
            record.exc_text = _PLAIN.formatException(record.exc_info)
            record.exc_info = None
        return record


_PLAIN = logging.Formatter()
_listener: logging.handlers.QueueListener | None = None


def stop_logging() -> None:
    """Write out every queued record and stop the listener thread (idempotent; runs at exit)."""
    global _listener
    listener, _listener = _listener, None
    if listener is None:
        return
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _ToListener):
            root.removeHandler(handler)
    listener.stop()  # drains the queue, then joins the thread
    for handler in listener.handlers:
        handler.close()


atexit.register(stop_logging)


def setup_logging(
    *,
    level: str = "INFO",
    file: str | Path | None = None,
    json_lines: bool = True,
    max_mb: float = 20.0,
    backups: int = 5,
    secret_values: Iterable[str] = (),
    console: bool = True,
) -> None:
    """Configure the root logger: console plus optional rotating file, both redacting, written by a thread."""
    global _listener
    secrets.register(secret_values)
    stop_logging()
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)

    handlers: list[logging.Handler] = []
    if console:
        console_handler = logging.StreamHandler(sys.stderr)
        console_handler.setFormatter(RedactingFormatter(ConsoleFormatter()))
        handlers.append(console_handler)

    if file:
        path = Path(file)
        path.parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=int(max_mb * 1024 * 1024), backupCount=backups, encoding="utf-8"
        )
        inner = JsonFormatter() if json_lines else ConsoleFormatter()
        file_handler.setFormatter(RedactingFormatter(inner))
        handlers.append(file_handler)

    if handlers:
        records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        _listener = logging.handlers.QueueListener(records, *handlers, respect_handler_level=True)
        _listener.start()
        root.addHandler(_ToListener(records))

    # Chatty libraries: their request logs carry URLs (with bot tokens) at INFO.
    # apscheduler's executor logs two lines per job run at INFO (the ``risk_view`` job runs every second).
    for noisy in ("httpx", "httpcore", "telegram.ext", "discord", "websockets", "aiohttp.access", "tortoise",
                  "apscheduler.executors"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
