"""Loading and validating a predictor's input table with DuckDB.

A table is a CSV (optionally gzipped) or Parquet file with a timestamp column and numeric columns:
the simulator's ``queue_metrics.csv`` or a raw trace (``timestamp,requests``). :func:`load_table`
reads it into a DuckDB view, checks it, and describes it: which columns are numeric, the sampling
interval (the most common spacing between rows), and the contiguous segments (a spacing larger
than the interval is a gap). Every problem is a :class:`DataError` that names the file, the
column and, where there is one, the first offending row.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd

#: The target when none is named: the load, as the simulator's dataset (``arrivals`` per step)
#: or a raw trace (``requests`` per step) calls it.
DEFAULT_TARGETS = ("arrivals", "requests")
#: Columns that identify rows rather than describe the system; never used as features.
ID_COLUMNS = ("segment",)
NUMERIC_TYPES = {
    "BIGINT", "INTEGER", "SMALLINT", "TINYINT", "HUGEINT", "UBIGINT", "UINTEGER", "USMALLINT",
    "UTINYINT", "DOUBLE", "FLOAT", "REAL", "BOOLEAN",
}


class DataError(ValueError):
    """Input data that cannot be used; the message says what and where."""


@dataclass(frozen=True)
class Table:
    """A validated input table, loaded into ``con`` as the table ``source``: ``ts``, the numeric
    columns as DOUBLE, ``seg`` (contiguous segment) and ``rn`` (row within it), sorted by ts."""

    path: Path
    con: duckdb.DuckDBPyConnection
    timestamp: str
    target: str
    numeric: tuple[str, ...]  # numeric columns other than the timestamp (target included)
    rows: int
    interval_seconds: int
    fingerprint: str  # sha256 of the file's bytes (first 16 hex digits)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def fingerprint(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def connect() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    return con


def load_table(path: str | Path | pd.DataFrame, *, target: str | None,
               timestamp: str = "timestamp") -> Table:
    """Load ``path`` into table ``source`` (typed, sorted by time) and validate it; ``target``
    None: the first of :data:`DEFAULT_TARGETS` the table has. ``path`` may also be a pandas
    frame of the same shape (a worker's recent readings), named ``<frame>`` in errors."""
    con = connect()
    if isinstance(path, pd.DataFrame):
        frame, path = path, Path("<frame>")
        con.register("incoming", frame)
        source, digest = "incoming", hashlib.sha256(
            pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes()).hexdigest()[:16]
    else:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: no such file")
        if path.stat().st_size == 0:  # DuckDB reads it as one column, "column0", and no rows
            raise DataError(f"{path}: the file is empty")
        reader = "read_parquet" if path.suffix == ".parquet" else "read_csv"
        source = f"{reader}('" + str(path).replace("'", "''") + "')"
        digest = None
    try:
        con.execute(f"CREATE TABLE raw AS SELECT * FROM {source}")  # parsed once
        described = con.execute("DESCRIBE raw").fetchall()
    except duckdb.Error as error:
        raise DataError(f"{path}: not a readable table ({str(error).splitlines()[0]})") from None
    columns = {name: kind for name, kind, *_ in described}
    if target is None:
        target = next((c for c in DEFAULT_TARGETS if c in columns), None)
        if target is None:
            raise DataError(f"{path}: no load column {list(DEFAULT_TARGETS)} to forecast; name "
                            f"the target (--target); the columns are {list(columns)}")
    for needed, what in ((timestamp, "timestamp"), (target, "target")):
        if needed not in columns:
            raise DataError(
                f"{path}: missing {what} column {needed!r}; the columns are {list(columns)}"
            )
    rows = con.execute("SELECT count(*) FROM raw").fetchall()[0][0]
    if rows == 0:
        raise DataError(f"{path}: the table has no rows")

    _check_timestamps(con, path, timestamp)
    numeric = [
        c for c in columns
        if c != timestamp and _is_numeric(con, path, c, columns[c], required=c == target)
    ]
    casts = ", ".join(f"TRY_CAST({_quote(c)} AS DOUBLE) AS {_quote(c)}" for c in numeric)
    con.execute(
        f"CREATE TABLE typed AS SELECT CAST({_quote(timestamp)} AS TIMESTAMPTZ) AS ts, {casts} "
        f"FROM raw ORDER BY ts"
    )
    missing = con.execute(f"SELECT count(*) FROM typed WHERE {_quote(target)} IS NULL").fetchall()
    if missing[0][0]:
        raise DataError(f"{path}: target column {target!r} has {missing[0][0]} empty values")
    interval = _interval(con, path)
    # Segments: a spacing other than the interval (a gap) starts a new one; rn counts rows
    # within a segment. Everything downstream partitions by segment.
    con.execute(f"""
        CREATE TABLE source AS
        WITH stepped AS (
            SELECT *, CASE WHEN epoch(ts) - epoch(lag(ts) OVER (ORDER BY ts)) = {interval}
                           THEN 0 ELSE 1 END AS new_segment
            FROM typed
        ), segmented AS (
            SELECT * EXCLUDE (new_segment),
                   CAST(sum(new_segment) OVER (ORDER BY ts ROWS UNBOUNDED PRECEDING) AS BIGINT)
                   AS seg
            FROM stepped
        )
        SELECT *, row_number() OVER (PARTITION BY seg ORDER BY ts) AS rn
        FROM segmented ORDER BY ts
    """)
    con.execute("DROP TABLE typed")
    return Table(
        path=path,
        con=con,
        timestamp=timestamp,
        target=target,
        numeric=tuple(numeric),
        rows=int(rows),
        interval_seconds=interval,
        fingerprint=digest or fingerprint(path),
    )


def _check_timestamps(con: duckdb.DuckDBPyConnection, path: Path, column: str) -> None:
    quoted = _quote(column)
    bad = con.execute(
        f"SELECT row_number, value FROM (SELECT row_number() OVER () AS row_number, "
        f"CAST({quoted} AS VARCHAR) AS value, TRY_CAST({quoted} AS TIMESTAMPTZ) AS ts FROM raw) "
        f"WHERE ts IS NULL ORDER BY row_number LIMIT 1"
    ).fetchall()
    if bad:
        raise DataError(f"{path}: row {bad[0][0]}: column {column!r} value {bad[0][1]!r} is not a timestamp")
    duplicate = con.execute(
        f"SELECT CAST({quoted} AS VARCHAR), count(*) FROM raw GROUP BY 1 HAVING count(*) > 1 "
        f"ORDER BY 1 LIMIT 1"
    ).fetchall()
    if duplicate:
        raise DataError(
            f"{path}: column {column!r}: timestamp {duplicate[0][0]} appears {duplicate[0][1]} times"
        )


def _is_numeric(
    con: duckdb.DuckDBPyConnection, path: Path, column: str, kind: str, *, required: bool
) -> bool:
    """Numeric columns pass; a text column with some values that are not numbers is an error when
    the rest are numbers (or it is the target); an all-text column is just not a feature."""
    if kind.upper() in NUMERIC_TYPES or kind.upper().startswith("DECIMAL"):
        return column not in ID_COLUMNS
    quoted = _quote(column)
    counts = con.execute(
        f"SELECT count({quoted}), count(TRY_CAST({quoted} AS DOUBLE)) FROM raw"
    ).fetchall()[0]
    if counts[1] == 0 and not required:
        return False
    bad = con.execute(
        f"SELECT row_number, value FROM (SELECT row_number() OVER () AS row_number, "
        f"CAST({quoted} AS VARCHAR) AS value FROM raw) "
        f"WHERE value IS NOT NULL AND TRY_CAST(value AS DOUBLE) IS NULL ORDER BY row_number LIMIT 1"
    ).fetchall()
    if bad:
        raise DataError(f"{path}: row {bad[0][0]}: column {column!r} value {bad[0][1]!r} is not a number")
    return column not in ID_COLUMNS


def _interval(con: duckdb.DuckDBPyConnection, path: Path) -> int:
    """The most common spacing between consecutive rows, in seconds."""
    spacing = con.execute(
        "SELECT mode(gap) FROM (SELECT epoch(ts) - epoch(lag(ts) OVER (ORDER BY ts)) AS gap "
        "FROM typed) WHERE gap IS NOT NULL"
    ).fetchall()[0][0]
    if spacing is None or spacing <= 0:
        raise DataError(f"{path}: needs at least two rows with distinct timestamps")
    return int(round(spacing))
