"""A small persistent key-value store on top of the ``KeyValue`` model.

Values are wrapped as ``{"v": value}``: tortoise's JSONField treats a bare string as
already-encoded JSON, so ``"10500.25"`` would come back as a number.
"""

from __future__ import annotations

from typing import Any

from db.models import KeyValue


async def kv_get(key: str, default: Any = None) -> Any:
    """The stored value for ``key``, or ``default`` when absent."""
    row = await KeyValue.get_or_none(key=key)
    if row is None or not isinstance(row.value, dict) or "v" not in row.value:
        return default
    return row.value["v"]


async def kv_set(key: str, value: Any) -> None:
    """Store a JSON-serialisable value under ``key`` (insert or replace)."""
    await KeyValue.update_or_create(key=key, defaults={"value": {"v": value}})
