"""SQL helpers of the warehouse: the `.sql` files beside the code, multi-statement scripts,
transactions. A leaf: it imports nothing of ours."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import duckdb

SQL_DIR = Path(__file__).parent / "sql"


def sql(name: str) -> str:
    """The text of `warehouse/sql/<name>.sql`."""
    return (SQL_DIR / f"{name}.sql").read_text()


def run_script(con: duckdb.DuckDBPyConnection, script: str,
               params: dict[str, object] | None = None) -> None:
    """Run a multi-statement SQL script statement by statement (DuckDB's own parser splits it),
    binding to each statement the `$name`s it uses."""
    params = params or {}
    for statement in con.extract_statements(script):
        text = statement.query
        code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
        con.execute(text, {k: v for k, v in params.items() if f"${k}" in code})


@contextlib.contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """BEGIN … COMMIT, or ROLLBACK if the block raises."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def meta(con: duckdb.DuckDBPyConnection, key: str) -> str | None:
    """A value of the writer's `warehouse_meta` (None when unset)."""
    row = con.execute("SELECT value FROM warehouse_meta WHERE key = ?", [key]).fetchall()
    return row[0][0] if row else None


def set_meta(con: duckdb.DuckDBPyConnection, key: str, value: object) -> None:
    con.execute("INSERT OR REPLACE INTO warehouse_meta VALUES (?, ?)", [key, str(value)])
