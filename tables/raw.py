"""Pre-built SQL for the per-chunk hot statements, run on the caller's connection.

Why not Core: for a 1,000-row chunk, SQLAlchemy Core spends far more CPU than
the database does - per-row dict parameters, bind processing per value, and
"insertmanyvalues" rebuilding a multi-row ``VALUES`` text that psycopg then
re-parses on every call. Here a statement's text is fixed per shape, parameters
are tuples, and values go through the columns' own bind/result processors (once
per distinct value: a chunk's timestamps repeat), so what is written and read
back is exactly what Core would write and read.

* PostgreSQL: one statement per batch; each column travels as one typed binary
  array (``unnest``), or as one scalar when the whole batch holds one value for
  it, so the server runs one statement and psycopg prepares each shape once.
* SQLite: ``executemany`` of a one-row statement: sqlite3 loops in C over one
  prepared statement, and its rowcount sums the rows each run changed.

Statements run through ``Connection.exec_driver_sql``: same connection, same
transaction, same error types as Core.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.engine import Dialect

Processor = Callable[[Any], Any]
T = TypeVar("T")
_UNSIZED = re.compile(r"\(\d+(?:,\s*\d+)?\)")  # VARCHAR(64) -> VARCHAR
_BIND: dict[tuple[str, str, str, str], Processor | None] = {}
_RESULT: dict[tuple[str, str, str, str], Processor | None] = {}
# A statement for one shape: its SQL, and the column indexes of its parameters in placeholder order.
Statement = tuple[str, tuple[int, ...]]
_SQL: dict[tuple[Any, ...], Statement] = {}


def is_pg(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


def marker(conn: Connection) -> str:
    """The driver's positional parameter marker."""
    return "%s" if is_pg(conn) else "?"


def pg_param(column: sa.Column[Any], dialect: Dialect) -> str:
    """``%b::<column type>``: a typed, binary parameter (NULLs keep their type; binary spares
    psycopg quoting every element of a text array).

    The type goes without its length: an explicit cast to ``VARCHAR(n)`` would silently truncate a
    too-long value, where storing it into the column must fail, as it does through Core.
    """
    return f"%b::{_UNSIZED.sub('', column.type.compile(dialect=dialect))}"


def pg_array(column: sa.Column[Any], dialect: Dialect) -> str:
    """A whole column of values as one typed parameter."""
    return f"{pg_param(column, dialect)}[]"


def one_of(conn: Connection, column_sql: str, column: sa.Column[Any], n: int) -> str:
    """SQL for ``column_sql IN (n values)``; pass the values through ``one_of_params``.

    Postgres: ``= ANY(array)``, one parameter and one statement text whatever ``n``.
    """
    if is_pg(conn):
        return f"{column_sql} = ANY({pg_array(column, conn.dialect)})"
    return f"{column_sql} IN ({', '.join('?' * n)})"


def one_of_params(conn: Connection, values: Sequence[Any]) -> tuple[Any, ...]:
    return (list(values),) if is_pg(conn) else tuple(values)


def _processor(cache: dict[tuple[str, str, str, str], Processor | None], column: sa.Column[Any],
               dialect: Dialect, bind: bool) -> Processor | None:
    key = (dialect.name, dialect.driver, column.table.name, column.name)
    if key not in cache:
        impl = column.type.dialect_impl(dialect)
        cache[key] = impl.bind_processor(dialect) if bind else impl.result_processor(dialect, None)
    return cache[key]


def _memoised(proc: Processor) -> Processor:
    """``proc`` once per distinct value: a batch holds a handful of distinct timestamps."""
    memo: dict[Any, Any] = {}

    def run(value: Any) -> Any:
        try:
            return memo[value]
        except KeyError:
            out = memo[value] = proc(value)
            return out
        except TypeError:  # unhashable
            return proc(value)
    return run


def bind_columns(conn: Connection, columns: Sequence[sa.Column[Any]], values: list[Sequence[Any]]) -> list[list[Any]]:
    """Each column's values (``values[i]`` belongs to ``columns[i]``) through its bind processor."""
    out: list[list[Any]] = []
    for column, col_values in zip(columns, values):
        proc = _processor(_BIND, column, conn.dialect, True)
        out.append(list(col_values) if proc is None else list(map(_memoised(proc), col_values)))
    return out


def result_rows(conn: Connection, columns: Sequence[sa.Column[Any] | None], rows: Iterable[Sequence[Any]]
                ) -> Iterator[tuple[Any, ...]]:
    """Raw driver rows with each column's result processor applied (``None``: a computed column)."""
    procs = [None if c is None else _processor(_RESULT, c, conn.dialect, False) for c in columns]
    active = [(i, _memoised(p)) for i, p in enumerate(procs) if p is not None]
    if not active:
        yield from (tuple(r) for r in rows)
        return
    for row in rows:
        items = list(row)
        for i, proc in active:
            items[i] = proc(items[i])
        yield tuple(items)


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """``items`` in slices of ``size`` (at least 1)."""
    size = max(1, size)
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _statement(key: tuple[Any, ...], varying: tuple[bool, ...], build: Callable[[tuple[bool, ...]], Statement]
               ) -> Statement:
    found = _SQL.get((key, varying))
    if found is None:
        found = _SQL[(key, varying)] = build(varying)
    return found


def _run_batches(conn: Connection, key: tuple[Any, ...], build: Callable[[tuple[bool, ...]], Statement],
                 columns: Sequence[sa.Column[Any]], rows: Sequence[Sequence[Any]], batch: int) -> int:
    """Run the statement ``build`` makes for each batch of ``rows``; the number of rows it changed.

    ``build(varying)`` gets, on Postgres, which columns vary within the batch (they travel as
    arrays) and which hold one value (it travels once, as a scalar: a chunk's delivery id,
    timestamps and NULL columns); on SQLite always ``()``.
    """
    pg = is_pg(conn)
    total = 0
    for chunk in chunks(rows, batch):
        try:
            values = bind_columns(conn, columns, list(zip(*chunk)))
        except (TypeError, ValueError) as exc:  # e.g. a naive datetime: the error Core raises for it
            sql = _statement(key, (True,) * len(columns) if pg else (), build)[0]
            raise sa.exc.StatementError(f"({type(exc).__module__}.{type(exc).__name__}) {exc}", sql, None, exc) from exc
        if pg:
            # Dumping arrays element by element is most of psycopg's work here, so a column of one
            # repeated value is sent once; one array is kept to carry the row count.
            varying = tuple(col.count(col[0]) != len(col) for col in values)
            if len(chunk) > 1 and not any(varying):
                varying = (True, *varying[1:])
            sql, order = _statement(key, varying, build)
            params: Any = tuple(values[i] if varying[i] else values[i][0] for i in order)
        else:
            sql, order = _statement(key, (), build)
            params = list(zip(*(values[i] for i in order)))
        total += max(conn.exec_driver_sql(sql, params).rowcount, 0)
    return total


def _pg_source(columns: Sequence[sa.Column[Any]], aliases: Sequence[str], varying: tuple[bool, ...],
               dialect: Dialect) -> tuple[list[str], str, list[int], list[int]]:
    """Per column its SQL (``u.<alias>`` or a scalar placeholder), the ``FROM unnest(...)`` clause
    ("" when nothing varies), and the indexes of the scalar and of the array columns."""
    arrays = [i for i, v in enumerate(varying) if v]
    scalars = [i for i, v in enumerate(varying) if not v]
    refs = [f"u.{a}" if v else pg_param(c, dialect) for c, a, v in zip(columns, aliases, varying)]
    source = (f" FROM unnest({', '.join(pg_array(columns[i], dialect) for i in arrays)}) "
              f"AS u({', '.join(aliases[i] for i in arrays)})") if arrays else ""
    return refs, source, scalars, arrays


def insert_rows(conn: Connection, table: sa.Table, names: Sequence[str], rows: Sequence[Sequence[Any]], *,
                tail: str = "", batch: int = 1_000) -> int:
    """``INSERT INTO table (names) <rows> <tail>`` and the number of rows inserted or updated.

    ``rows`` are tuples in ``names`` order; ``tail`` is an ``ON CONFLICT`` clause
    (plain SQL, same on both backends). The count is exact on both backends: it
    is each statement's own changed-row count.
    """
    if not rows:
        return 0
    columns = [table.c[n] for n in names]
    head = f"INSERT INTO {table.name} ({', '.join(names)})"

    def build(varying: tuple[bool, ...]) -> Statement:
        if not is_pg(conn):
            return f"{head} VALUES ({', '.join('?' * len(names))}) {tail}".rstrip(), tuple(range(len(names)))
        refs, source, scalars, arrays = _pg_source(columns, names, varying, conn.dialect)
        return f"{head} SELECT {', '.join(refs)}{source} {tail}".rstrip(), (*scalars, *arrays)

    key = ("insert", conn.dialect.name, table.name, tuple(names), tail)
    return _run_batches(conn, key, build, columns, rows, batch)


def update_rows(conn: Connection, table: sa.Table, keys: Sequence[str], names: Sequence[str],
                rows: Sequence[Sequence[Any]], *, batch: int = 1_000) -> int:
    """Set ``names`` on the rows matching ``keys``; ``rows`` are tuples of key values then new values.

    Returns the number of rows updated.
    """
    if not rows:
        return 0
    columns = [table.c[n] for n in (*keys, *names)]
    nk = len(keys)

    def build(varying: tuple[bool, ...]) -> Statement:
        if not is_pg(conn):  # SET placeholders come first in the text
            sets = ", ".join(f"{n} = ?" for n in names)
            match = " AND ".join(f"{k} = ?" for k in keys)
            return f"UPDATE {table.name} SET {sets} WHERE {match}", (*range(nk, len(columns)), *range(nk))
        refs, source, scalars, arrays = _pg_source(columns, [f"k_{k}" for k in keys] + [f"v_{n}" for n in names],
                                                   varying, conn.dialect)
        sets = ", ".join(f"{n} = {ref}" for n, ref in zip(names, refs[nk:]))
        match = " AND ".join(f"t.{k} = {ref}" for k, ref in zip(keys, refs[:nk]))
        # Placeholders in text order: SET scalars, the unnest arrays, then WHERE scalars.
        order = (*(i for i in scalars if i >= nk), *arrays, *(i for i in scalars if i < nk))
        return f"UPDATE {table.name} AS t SET {sets}{source} WHERE {match}", order

    key = ("update", conn.dialect.name, table.name, tuple(keys), tuple(names))
    return _run_batches(conn, key, build, columns, rows, batch)
