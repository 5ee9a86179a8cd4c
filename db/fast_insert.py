"""Writing a few linked rows in one transaction, fast enough to sit on the order path.

The order path commits a signal, a trade and the order intent (with its events) before the
request may leave (issue 10). Through the ORM that costs milliseconds: ``Model.create`` spends
0.3-0.5 ms of CPU per row on instance set-up before its statement runs, and every statement,
``BEGIN`` and ``COMMIT`` is a separate hand-off to aiosqlite's thread (on one core each hand-off
is a context switch: 0.1-0.3 ms, measured by ``bench/bench_latency.py``).

:func:`insert_rows` writes :class:`Row` s with the very statements tortoise would run
(``executor.insert_query``, cached per connection and table, with the backend's placeholders)
and values converted as each field's own ``to_db_value`` converts them (:func:`to_db`); defaults, ``auto_now`` and
``auto_now_add`` are filled here, so a stored row equals what ``Model.create`` stores
(``tests/test_db_fast_insert.py`` compares them on every backend the tests run on). A value may
be a :class:`Ref` to the id of an earlier row of the same call (a trade's ``signal_id``).

On SQLite the whole transaction (``BEGIN``, every insert, ``COMMIT``) runs in ONE call on the
connection's own thread, under tortoise's connection lock so no other query interleaves. That call
is aiosqlite's ``Connection._execute`` (the one primitive behind all of its public methods;
``pyproject.toml`` pins the aiosqlite versions it was checked with). Other backends get one
tortoise transaction with a statement per row.

The returned objects are built the way tortoise builds rows it reads (``Model._init_from_db``),
without another query, and only when read (:class:`StoredRows`).
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, TypeVar

from tortoise import connections, fields
from tortoise.backends.base.client import BaseDBAsyncClient, TransactionalDBClient
from tortoise.backends.sqlite.client import SqliteClient
from tortoise.exceptions import IntegrityError, OperationalError
from tortoise.fields.data import CharEnumFieldInstance
from tortoise.models import Model
from tortoise.transactions import in_transaction
from tortoise.validators import MaxLengthValidator

M = TypeVar("M", bound=Model)


@dataclass(frozen=True, slots=True)
class Ref:
    """The id of the ``index``-th row of the same :func:`insert_rows` call."""

    index: int


@dataclass(frozen=True, slots=True)
class Row:
    """One row to insert: field names as ``Model.create`` takes them, foreign keys by id (``trade_id=...``)."""

    model: type[Model]
    values: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class _Table:
    """How one model's rows are inserted on one connection, worked out once (the order path reads it from here).

    Per column: ``fills`` says how a row that leaves the column out fills it (:func:`_fill`), ``to_db``
    its field's conversion (:func:`to_db`).
    """

    model: type[Model]
    sql: str
    columns: tuple[str, ...]
    fills: tuple[tuple[str, Any], ...]
    to_db: tuple[Callable[[Any], Any], ...]
    insertable: frozenset[str]


def to_db(field: fields.Field) -> Callable[[Any], Any]:
    """``field.to_db_value(value, None)`` as a one-argument function, with a short route for the usual values.

    An entry converts about 60 values, and tortoise takes 3-4 calls for each (``to_db_value``, ``validate``,
    each validator, an environment lookup per datetime). The order path runs cold, and that route cost about
    0.5 ms of the benchmark's tick-to-order p50 (interleaved runs, issue 10). The short
    route covers the exact types the order path stores: a value of the field's own type (``str`` within its
    length, ``Decimal``, ``int``, ``bool``), an aware ``datetime``, a ``dict`` or ``list`` for JSON, a member
    of the field's enum, and ``None`` for a nullable field. Any other value, and any field or validator not
    named here, goes through tortoise's own ``to_db_value`` (so its conversions and errors are unchanged);
    ``tests/test_db_fast_insert.py`` checks that both give the same result for every column.
    """
    slow = field.to_db_value
    if any(type(v) is not MaxLengthValidator for v in field.validators):
        return lambda value: slow(value, None)
    max_length = min((v.max_length for v in field.validators), default=None)
    null = field.null
    method = type(field).to_db_value
    if method is fields.Field.to_db_value and (max_length is None or field.field_type is str):
        exact = field.field_type
        limit = sys.maxsize if max_length is None else max_length

        def plain(value: Any) -> Any:
            if (type(value) is exact and (exact is not str or len(value) <= limit)) or (value is None and null):
                return value
            return slow(value, None)
        return plain
    if method is fields.DatetimeField.to_db_value and max_length is None:
        def moment(value: Any) -> Any:
            if (type(value) is datetime and value.utcoffset() is not None) or (value is None and null):
                return value
            return slow(value, None)
        return moment
    if method is fields.JSONField.to_db_value and max_length is None:
        encoder = field.encoder

        def json_value(value: Any) -> Any:
            if type(value) is dict or type(value) is list:
                return encoder(value)
            return slow(value, None)
        return json_value
    if method is CharEnumFieldInstance.to_db_value:
        enum_type = field.enum_type
        stored = {}
        for member in enum_type:
            try:
                stored[member] = slow(member, None)
            except Exception:  # noqa: BLE001  (too long for the column: tortoise's route raises its error when used)
                continue

        def member_value(value: Any) -> Any:
            if type(value) is enum_type and value in stored:
                return stored[value]
            return slow(value, None)
        return member_value
    return lambda value: slow(value, None)


# how an insert that leaves a column out fills it (``_Table.fills``): kind and value, so the order path calls nothing
_STORED, _NOW, _CALLED, _REQUIRED = "stored", "now", "called", "required"


def _fill(field: fields.Field) -> tuple[str, Any]:
    """What an insert that leaves ``field`` out stores: now (auto times), the default, NULL, or an error."""
    default = field.default
    if isinstance(field, fields.DatetimeField) and (field.auto_now or field.auto_now_add):
        return _NOW, None
    if default is not None:
        return (_CALLED, default) if callable(default) else (_STORED, default)
    if field.null:
        return _STORED, None
    return _REQUIRED, None


def _python_values(table: _Table, given: Mapping[str, Any], now: datetime) -> list[Any]:
    """Every insert column's Python value, in column order: the given one, else what :func:`_fill` says."""
    if not table.insertable.issuperset(given):
        raise TypeError(f"{table.model.__name__} has no insertable column(s) {sorted(set(given) - table.insertable)}")
    values = []
    for name, (kind, default) in zip(table.columns, table.fills):
        if name in given:
            values.append(given[name])
        elif kind is _STORED:
            values.append(default)
        elif kind is _NOW:
            values.append(now)
        elif kind is _CALLED:
            values.append(default())  # a fresh one per row (``default=dict``)
        else:
            raise TypeError(f"{table.model.__name__}.{name} is required")
    return values


@dataclass(slots=True)
class _Prepared:
    table: _Table
    python: list[Any]  # in column order; Refs still unresolved

    def db_values(self, ids: Sequence[int]) -> list[Any]:
        return [to_db(ids[v.index] if type(v) is Ref else v) for to_db, v in zip(self.table.to_db, self.python)]

    def field_values(self, ids: Sequence[int]) -> dict[str, Any]:
        """Field name -> Python value, Refs resolved."""
        return {name: ids[v.index] if type(v) is Ref else v for name, v in zip(self.table.columns, self.python)}


# (backend class, connection name, model) -> its _Table: building tortoise's executor for the insert statement
# costs more per row than converting the row's values
_TABLES: dict[tuple[type, str, type[Model]], _Table] = {}


def _table(conn: BaseDBAsyncClient, model: type[Model]) -> _Table:
    key = (type(conn), conn.connection_name, model)
    table = _TABLES.get(key)
    if table is None:
        executor = conn.executor_class(model=model, db=conn)
        columns = tuple(executor.regular_columns)
        fields_map = model._meta.fields_map
        table = _TABLES[key] = _Table(model, executor.insert_query, columns,
                                      tuple(_fill(fields_map[c]) for c in columns),
                                      tuple(to_db(fields_map[c]) for c in columns), frozenset(columns))
    return table


def _prepare(conn: BaseDBAsyncClient, rows: Sequence[Row]) -> list[_Prepared]:
    now = datetime.now(timezone.utc)
    prepared = []
    for i, row in enumerate(rows):
        for value in row.values.values():
            if type(value) is Ref and not 0 <= value.index < i:
                raise ValueError(f"row {i} refers to row {value.index}: only earlier rows can be referred to")
        table = _table(conn, row.model)
        prepared.append(_Prepared(table, _python_values(table, row.values, now)))
    return prepared


def _sqlite_transaction(raw: sqlite3.Connection, prepared: list[_Prepared]) -> list[int]:
    """Runs on the connection's thread: every row in one transaction; the new ids in row order."""
    cursor = raw.cursor()
    cursor.execute("BEGIN")
    try:
        ids: list[int] = []
        for row in prepared:
            cursor.execute(row.table.sql, row.db_values(ids))
            ids.append(int(cursor.lastrowid or 0))
        cursor.execute("COMMIT")
    except BaseException:
        cursor.execute("ROLLBACK")
        raise
    finally:
        cursor.close()
    return ids


class StoredRows(Sequence[Model]):
    """The rows of one :func:`insert_rows` call, as model objects built on first access (``ids`` at once).

    Building a model object costs about as much as converting its row, so the order path builds only
    the ones it reads (the trade and the order, not the signal and the order's events).
    """

    def __init__(self, prepared: list[_Prepared], ids: list[int]) -> None:
        self._prepared = prepared
        self.ids = ids
        self._built: dict[int, Model] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(len(self.ids))[index]]
        index = range(len(self.ids))[index]  # negative indexes; IndexError when out of range
        built = self._built.get(index)
        if built is None:
            row = self._prepared[index]
            values = row.field_values(self.ids)
            values[row.table.model._meta.pk_attr] = self.ids[index]
            built = self._built[index] = instance(row.table.model, values)
        return built


async def insert_rows(rows: Sequence[Row]) -> StoredRows:
    """Insert ``rows`` atomically (all or none); returns them as model objects with their ids."""
    if not rows:
        return StoredRows([], [])
    client = connections.get(rows[0].model._meta.default_connection)
    prepared = _prepare(client, rows)
    if isinstance(client, SqliteClient) and not isinstance(client, TransactionalDBClient):
        async with client.acquire_connection() as aconn:  # tortoise's lock: no other statement in between
            try:
                ids = await aconn._execute(_sqlite_transaction, aconn._conn, prepared)
            except sqlite3.IntegrityError as exc:  # the errors tortoise's own queries raise
                raise IntegrityError(exc) from exc
            except sqlite3.OperationalError as exc:
                raise OperationalError(exc) from exc
    else:
        ids = []
        async with in_transaction(client.connection_name) as conn:
            for row in prepared:
                result = await conn.execute_insert(row.table.sql, row.db_values(ids))
                ids.append(result if isinstance(result, int) else result[row.table.model._meta.pk_attr])
    return StoredRows(prepared, ids)


def warm_up(*models: type[Model]) -> None:
    """Build the insert statements of ``models`` now, so the first order does not."""
    for model in models:
        _table(connections.get(model._meta.default_connection), model)


def instance(model: type[M], values: Mapping[str, Any]) -> M:
    """A model object for a stored row whose field values are known (no query): as if it had been fetched."""
    projection = model._meta.fields_db_projection
    return model._init_from_db(**{projection[name]: value for name, value in values.items()})
