"""Opening and closing the database, and applying migrations on start."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tortoise import Tortoise, connections
from tortoise.migrations.api import migrate as tortoise_migrate

from db.kv import kv_set

log = logging.getLogger(__name__)

MODELS_MODULE = "db.models"
MIGRATIONS_MODULE = "db.migrations"


# SQLite durability: WAL journal (tortoise's default) with ``synchronous=NORMAL``.
# Trade-off, chosen for the order path's latency (issue 10): in WAL mode NORMAL never corrupts the
# database and a commit survives a crash of the bot process (the WAL is in the OS page cache), but
# an OS crash or power loss can drop the last commits before the next checkpoint fsyncs them.
# FULL (SQLite's default) fsyncs every commit: ~1.5-6 ms each on a disk, on the critical path of
# every order. A URL that names ``synchronous`` itself wins (``sqlite://bot.db?synchronous=FULL``
# restores an fsync per commit, e.g. on a host without a UPS or with a flaky kernel).
#
# Checkpoints (copying the WAL back into the database file, with an fsync) never run inside a commit:
# ``wal_autocheckpoint=0`` stops SQLite from doing one in whichever commit crosses 1000 pages, which
# on the order path was a pause of several ms (issue 10). The worker's ``db_checkpoint`` job calls
# :func:`checkpoint` every minute at second 30, away from candle closes; the last close checkpoints too.
SQLITE_DEFAULT_PRAGMAS = {"synchronous": "NORMAL", "wal_autocheckpoint": "0"}
WAL_RESTART_KEY = "db.wal_restarted_at"  # the key :func:`checkpoint` writes to start the WAL over


def normalise_url(url: str) -> str:
    """Map the accepted PostgreSQL spellings onto tortoise's asyncpg scheme."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "asyncpg://" + url[len(prefix) :]
    return url


def with_sqlite_pragmas(url: str) -> str:
    """A SQLite URL with :data:`SQLITE_DEFAULT_PRAGMAS` added where the URL does not set them; others unchanged.

    tortoise's SQLite client runs ``PRAGMA <name>=<value>`` on connect for every URL parameter.
    """
    if not url.startswith("sqlite://"):
        return url
    base, _, query = url.partition("?")
    named = {part.split("=", 1)[0].lower() for part in query.split("&") if part}
    extra = [f"{k}={v}" for k, v in SQLITE_DEFAULT_PRAGMAS.items() if k not in named]
    if not extra:
        return url
    return f"{base}?{'&'.join(([query] if query else []) + extra)}"


def tortoise_config(url: str) -> dict[str, Any]:
    """Tortoise config dict for one connection and our single app ``models``."""
    url = with_sqlite_pragmas(normalise_url(url))
    # Tortoise caches generated SQL per connection *name*; naming the connection after its
    # backend keeps SQLite and PostgreSQL statements apart when one process uses both (tests).
    connection_name = url.split("://", 1)[0]
    return {
        "connections": {connection_name: url},
        "apps": {
            "models": {
                "models": [MODELS_MODULE],
                "default_connection": connection_name,
                "migrations": MIGRATIONS_MODULE,
            }
        },
        "use_tz": True,
        "timezone": "UTC",
    }


def _ensure_sqlite_dir(url: str) -> None:
    if url.startswith("sqlite://"):
        path = url[len("sqlite://") :].split("?", 1)[0]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)


async def init_db(url: str, *, apply_migrations: bool = True) -> None:
    """Connect, apply pending migrations (tortoise's own migration system), and be ready for queries."""
    _ensure_sqlite_dir(url)
    config = tortoise_config(url)
    if apply_migrations:
        await tortoise_migrate(config=config)
        # migrate() initialises Tortoise lazily; start over so connections are ready for normal use.
        await _reset()
    await Tortoise.init(config=config)
    log.info("database ready", extra={"component": "db"})


async def checkpoint() -> tuple[int, int] | None:
    """Copy SQLite's WAL into the database file now (PASSIVE: never waits for other connections).

    When all of it was copied, the next commit starts the WAL over, and that commit rewrites the WAL
    header and fdatasyncs it (``synchronous=NORMAL`` does that once per restart): 5-10 ms on this
    disk when it is busy. A small write right here makes that restart now, in the job, rather than
    in whichever commit comes next, which at a candle close is an order's (issue 10).

    Returns ``(wal pages, pages copied)``; ``None`` on other databases, which need nothing of the kind.
    """
    if "sqlite" not in connections.db_config:  # connections are named after their backend (tortoise_config)
        return None
    rows = await connections.get("sqlite").execute_query_dict("PRAGMA wal_checkpoint(PASSIVE)")
    row = rows[0] if rows else {}
    wal_pages, copied = int(row.get("log", 0)), int(row.get("checkpointed", 0))
    if wal_pages > 0 and copied == wal_pages:
        await kv_set(WAL_RESTART_KEY, datetime.now(timezone.utc).isoformat(timespec="seconds"))
    return wal_pages, copied


async def close_db() -> None:
    """Close every connection (flushes SQLite's WAL on the last close)."""
    await _reset()


async def _reset() -> None:
    # Also forget the model registry: querysets cache the SQL dialect of the last connection,
    # so re-initialising on another backend in the same process would reuse the wrong one.
    await Tortoise.close_connections()
    await Tortoise._reset_apps()


# For tortoise's CLI (`tortoise -c db.database.TORTOISE_ORM makemigrations`): a scratch SQLite file.
TORTOISE_ORM = tortoise_config("sqlite://data/makemigrations.db")
