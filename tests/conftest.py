"""Shared fixtures: paths to the shared data, and a database on SQLite (always) and PostgreSQL (when set)."""

from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import AsyncIterator, Iterator

import pytest

from bot.logging_setup import stop_logging
from db.database import close_db, init_db

# The simulator/client fixtures (sim, client) shared by the risk and reconciliation tests.
pytest_plugins = ("tests.risk_sim",)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = PROJECT_ROOT.parent / "shared"
MARKET_DATA_DIR = SHARED_DIR / "data" / "market"

_DB_BACKENDS = ["sqlite"] + (["postgres"] if os.environ.get("TEST_DATABASE_URL") else [])


async def _reset_postgres(url: str) -> None:
    """TEST_DATABASE_URL names a throwaway database: start every test from an empty schema."""
    import asyncpg

    conn = await asyncpg.connect(url.replace("asyncpg://", "postgres://", 1))
    try:
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
    finally:
        await conn.close()


@pytest.fixture(autouse=True)
def _logging_written_before_the_next_test() -> Iterator[None]:
    """A test that ran ``setup_logging`` leaves a writer thread bound to its captured stderr: stop it with the test."""
    yield
    stop_logging()


@pytest.fixture(autouse=True)
def _collector_thresholds_restored() -> Iterator[None]:
    """A test that started a worker leaves the collector's thresholds tuned (``bot.gc_tuning``): reset them."""
    thresholds = gc.get_threshold()
    yield
    gc.set_threshold(*thresholds)


@pytest.fixture(params=_DB_BACKENDS)
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A migrated, empty database: SQLite in a temp dir, and PostgreSQL when TEST_DATABASE_URL is set."""
    if request.param == "sqlite":
        url = f"sqlite://{tmp_path / 'test.db'}"
    else:
        url = os.environ["TEST_DATABASE_URL"]
        await _reset_postgres(url)
    await init_db(url)
    try:
        yield url
    finally:
        await close_db()
