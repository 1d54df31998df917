"""`stg_events`: the marts' one staging of `events` and `compliance_events` (JSON paths extracted
once, `warehouse/marts/_staging.sql`), kept in the writer's state and maintained by the loads.

It is also the marts' change log: every row carries `changed`, the change number of the load,
rebuild or late copy that last touched it (numbers only grow), and rows a rebuild removed are
kept in `stg_removed` until the marts have seen them. A mart refresh reads the rows changed since
its watermark — an append-ordered column, so DuckDB's zone maps skip older row groups: O(change).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import duckdb

from rtds_pipeline.warehouse import rowmap
from rtds_pipeline.warehouse.sqlscripts import run_script

MART_DIR = Path(__file__).parent / "marts"
MACROS = MART_DIR / "_macros.sql"  # shared by the staging and the marts; temporary, per connection
STAGING = MART_DIR / "_staging.sql"


def staging_sql(rows: str, kind: str) -> str:
    """The staging SELECT over `rows` (a table, view or parenthesised query shaped like events)."""
    body = "\n".join(line for line in STAGING.read_text().splitlines()
                     if not line.startswith("--"))
    return body.replace("{rows}", rows).replace("{stream}", kind)


def prepare(con: duckdb.DuckDBPyConnection) -> None:
    """The connection's macros and the staging tables (idempotent)."""
    run_script(con, MACROS.read_text())
    con.execute("CREATE SEQUENCE IF NOT EXISTS stg_change_seq")
    con.execute("CREATE TABLE IF NOT EXISTS stg_events AS SELECT 0::BIGINT AS changed, "
                f"0::UBIGINT AS h, * FROM ({staging_sql('events_columns', 'events')}) LIMIT 0")
    con.execute("CREATE TABLE IF NOT EXISTS stg_removed AS SELECT * FROM stg_events LIMIT 0")


def next_change(con: duckdb.DuckDBPyConnection) -> int:
    return con.execute("SELECT nextval('stg_change_seq')").fetchall()[0][0]


def stage(con: duckdb.DuckDBPyConnection, kind: str, rows_query: str,
          params: dict[str, object] | list[object] | None = None) -> int:
    """Append the staging of new rows (`rows_query`, shaped like events); returns their change."""
    change = next_change(con)
    stage_with(con, kind, rows_query, params or {}, change)
    return change


def add_late_copies(con: duckdb.DuckDBPyConnection, kind: str, copies: str) -> None:
    """Copies that arrived after their id's row was staged (`copies`: a query of id, n): their
    counts join the rows, which count as changed. Probes one 8-byte column."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE stg_copies AS SELECT id, key_hi(md5_number(id)) AS h, "
                f"sum(n)::INTEGER AS n FROM ({copies}) GROUP BY id")
    if not con.execute("SELECT count(*) FROM stg_copies").fetchall()[0][0]:
        return
    change = next_change(con)
    # In steps, each reading only what it must: the row ids by the 8-byte column, their ids
    # (wide strings) for those rows only, then the update by row id. As one UPDATE … FROM, the
    # ids of every row group holding a probable match were read: all of them, 0.4 s at 16M rows.
    con.execute(f"CREATE OR REPLACE TEMP TABLE stg_copy_rows AS SELECT rowid AS r FROM stg_events "
                f"WHERE h IN (SELECT h FROM stg_copies) AND stream = '{kind}'")
    con.execute("CREATE OR REPLACE TEMP TABLE stg_copy_hits AS SELECT s.rowid AS r, c.n "
                "FROM stg_events s JOIN stg_copies c ON s.id = c.id "
                "WHERE s.rowid IN (SELECT r FROM stg_copy_rows)")
    con.execute(f"UPDATE stg_events SET copies = stg_events.copies + x.n, changed = {change} "
                f"FROM stg_copy_hits x WHERE stg_events.rowid = x.r")


def restage_days(con: duckdb.DuckDBPyConnection, kind: str, days: Sequence[object],
                 rows_query: str, params: dict[str, object]) -> None:
    """A rebuild: the staged rows of `days` are replaced by `rows_query`'s; the old ones are kept
    in `stg_removed` so the marts recompute the keys they held."""
    change = next_change(con)
    where = f"stream = '{kind}' AND list_contains($days, occurred_date)"
    con.execute(f"INSERT INTO stg_removed SELECT * REPLACE ({change} AS changed) FROM stg_events "
                f"WHERE {where}", {"days": list(days)})
    con.execute(f"DELETE FROM stg_events WHERE {where}", {"days": list(days)})
    stage_with(con, kind, rows_query, params, change)


def stage_with(con: duckdb.DuckDBPyConnection, kind: str, rows_query: str,
               params: dict[str, object] | list[object], change: int) -> None:
    con.execute(f"INSERT INTO stg_events SELECT {change}, key_hi(md5_number(id)), * FROM "
                f"({staging_sql('(' + rows_query + chr(10) + ')', kind)})", params)


def restage_all(con: duckdb.DuckDBPyConnection, tables: dict[str, str]) -> None:
    """The staging recomputed from the `events` / `compliance_events` views (whole history: what a
    new writer state or a full rebuild does, apart from the loads)."""
    change = next_change(con)
    con.execute("DELETE FROM stg_events")
    rowmap.forget(con, rowmap.Table("stg_events", ""))
    for kind, table in tables.items():
        stage_with(con, kind, f"SELECT * FROM {table}", {}, change)
