"""One bot per account and database.

- SQLite: an exclusive ``fcntl.flock`` on ``<database file>.lock`` next to the database.
- PostgreSQL: ``pg_try_advisory_lock`` on a dedicated connection, keyed by a hash of the
  account key (mode plus API key: the key itself is never stored, logged or sent).

Both are released by the operating system or the server when the process dies (the file
descriptor closes; the connection drops), so a crashed bot never leaves a stale lock.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import logging
import os
from pathlib import Path
from typing import Any

from db.database import normalise_url

log = logging.getLogger(__name__)


class InstanceLockError(RuntimeError):
    """Another bot already runs on this account and database."""


def advisory_key(account_key: str) -> int:
    """A signed 64-bit PostgreSQL advisory-lock key derived from the account key."""
    digest = hashlib.sha256(b"trading-bot:" + account_key.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def sqlite_lock_path(database_url: str) -> Path | None:
    """``<db file>.lock`` for a file database; None for an in-memory one."""
    path = database_url.split("://", 1)[1].split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return Path(path).with_name(Path(path).name + ".lock")


class InstanceLock:
    """Acquire once at start (before anything trades); hold until exit."""

    def __init__(self, database_url: str, account_key: str) -> None:
        self.url = normalise_url(database_url)
        self._account_key = account_key
        self._fd: int | None = None
        self._conn: Any = None

    def __repr__(self) -> str:
        return f"InstanceLock({self.url.split('://', 1)[0]}, held={self.held})"

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None or self._conn is not None

    async def acquire(self) -> None:
        """Take the lock or raise :class:`InstanceLockError` naming what holds it."""
        if self.url.startswith("sqlite://"):
            await asyncio.to_thread(self._acquire_file)
        elif self.url.startswith("asyncpg://"):
            await self._acquire_postgres()
        else:
            raise InstanceLockError(f"no instance lock for database scheme {self.url.split('://', 1)[0]}")

    def _acquire_file(self) -> None:
        path = sqlite_lock_path(self.url)
        if path is None:
            log.warning("in-memory database: no single-instance lock")
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
            os.close(fd)
            raise InstanceLockError(f"another trading-bot (pid {holder or '?'}) already uses {path.with_suffix('')}; "
                                    "stop it first") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    async def _acquire_postgres(self) -> None:
        import asyncpg

        dsn = "postgres://" + self.url.split("://", 1)[1]
        conn = await asyncpg.connect(dsn)
        try:
            got = await conn.fetchval("SELECT pg_try_advisory_lock($1)", advisory_key(self._account_key))
        except BaseException:
            await conn.close()
            raise
        if not got:
            await conn.close()
            raise InstanceLockError("another trading-bot already runs on this account and database; stop it first")
        self._conn = conn

    async def release(self) -> None:
        """Give the lock back (also happens automatically when the process dies)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                await conn.execute("SELECT pg_advisory_unlock_all()")
            finally:
                await conn.close()

    async def __aenter__(self) -> InstanceLock:
        await self.acquire()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.release()


def account_key_for(config: Any) -> str:
    """The account identity: mode plus API key (paper mode: one account per database)."""
    api_key = config.exchange.api_key.get_secret_value() if config.mode.value == "live" else ""
    return f"{config.mode.value}:{api_key}"
