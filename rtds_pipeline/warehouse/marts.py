"""The marts: DuckDB tables built from the staging (`stg_events`, warehouse/staging.py) by one SQL
file each (`warehouse/marts/<name>.sql`), refreshed incrementally like dbt's models with a
`unique_key`: the keys the changed rows touch (`<name>.touched.sql`) are deleted and computed
again, every mart of a refresh in one transaction. A full refresh is the same SQL over
everything. Each mart has a check (`<name>.check.sql`, the rows that break it) besides the
uniqueness of its grain.

The header of each SQL file is the only registry: its first line names the mart and says what it
holds, then `-- Grain: col, col`, `-- Unique key: col` (`day` for a daily mart), `-- Refresh:`
in words and `-- Nullable: col (when …), col (when …)` (one or more such lines, `none` for a mart
that holds no NULL; a parenthesis may run on over the next lines); the tables it reads come from
the SQL itself (DuckDB's parser).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import json
import re
import time

import duckdb

from rtds_pipeline.warehouse import rowmap, staging
from rtds_pipeline.warehouse.events import TABLES
from rtds_pipeline.warehouse.sqlscripts import run_script, transaction
from rtds_pipeline.warehouse.store import pending_publish

MART_DIR = staging.MART_DIR
WATERMARK = "change"  # mart_watermarks: the last change of stg_events the marts include
# Marts whose consistency check warns instead of blocking: real streams carry opens of pushes
# whose sends fell out of RTDS's 7-day window, so a push with more opening channels than sends
# is not wrong data there. Every grain check blocks.
WARN_ONLY = frozenset({"push_performance"})


@dataclasses.dataclass(frozen=True)
class Mart:
    name: str
    grain: tuple[str, ...]  # columns that identify a row
    unique_key: str  # the column a refresh deletes and recomputes by
    description: str
    reads: tuple[str, ...]  # tables (or marts) its SQL reads
    nullable: tuple[str, ...] = ()  # the columns that can hold NULL (its header says when)

    @property
    def daily(self) -> bool:
        return self.unique_key == "day"

    @property
    def query(self) -> str:
        return _text(f"{self.name}.sql")

    @property
    def touched_query(self) -> str:
        return _text(f"{self.name}.touched.sql")

    @property
    def check_query(self) -> str:
        return _text(f"{self.name}.check.sql")

    @property
    def fingerprint(self) -> int:
        """Of its SQL (the model and what it recomputes): changes when either does."""
        return fingerprint(self.query, self.touched_query)

    @property
    def sources(self) -> tuple[str, ...]:
        """The pipeline tables behind it: events and/or compliance_events, landing_windows."""
        return tuple(t for t in self.reads if t != "stg_events")


def fingerprint(*texts: str) -> int:
    return int.from_bytes(hashlib.sha256("\0".join(texts).encode()).digest()[:7], "big")


STAGING_SQL = "sql:_staging"  # mart_watermarks: the fingerprint of the staging the marts read


def staging_fingerprint() -> int:
    """Of the staging's SQL and macros: when it changes, the staging and every mart are rebuilt."""
    return fingerprint(staging.STAGING.read_text(), staging.MACROS.read_text())


def _text(file: str) -> str:
    return (MART_DIR / file).read_text().strip().rstrip(";")


def tables_read(sql: str) -> tuple[str, ...]:
    """The tables a query reads (its CTEs left out), from DuckDB's own parse tree."""
    tree = json.loads(duckdb.execute("SELECT json_serialize_sql(?)", [sql]).fetchall()[0][0])
    if tree.get("error"):
        raise ValueError(f"cannot parse: {tree.get('error_message')}")
    names: set[str] = set()
    ctes: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if node.get("type") == "BASE_TABLE":
                names.add(node["table_name"])
            for entry in (node.get("cte_map") or {}).get("map", []):
                ctes.add(entry["key"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(tree)
    return tuple(sorted(names - ctes))


def parse_header(name: str, sql: str) -> Mart:
    """A mart from its SQL file's header comment."""
    header = []
    for line in sql.splitlines():
        if not line.startswith("--"):
            break
        header.append(line[2:].strip())
    fields = {}
    for line in header:
        m = re.match(r"(Grain|Unique key|Refresh|Nullable):\s*(.*)", line)
        if m:
            fields[m.group(1)] = m.group(2)
    missing = {"Grain", "Unique key", "Refresh", "Nullable"} - set(fields)
    if missing or not header[0].startswith(f"{name}:"):
        raise ValueError(f"warehouse/marts/{name}.sql: its header must start with '-- {name}: …' "
                         f"and have the lines {sorted(missing) or ''} ('-- Grain: col, col', "
                         "'-- Unique key: col', '-- Refresh: …', "
                         "'-- Nullable: col (when …), col (when …)' or '-- Nullable: none')")
    grain = tuple(c.strip() for c in fields["Grain"].split("(")[0].split(","))
    return Mart(name, grain, fields["Unique key"].strip(), " ".join(header), tables_read(sql),
                _nullable(name, header))


def _nullable(name: str, header: list[str]) -> tuple[str, ...]:
    """The columns the header's `Nullable:` lines name: each line lists `col (when …)` items,
    running on over the next lines while a parenthesis is open or after a trailing comma;
    `none` names none."""
    columns: list[str] = []
    for i, line in enumerate(header):
        if not line.startswith("Nullable:"):
            continue
        text, more = line.removeprefix("Nullable:"), iter(header[i + 1:])
        while ((text.count("(") > text.count(")") or text.endswith(","))
               and (nxt := next(more, None)) is not None):
            text += " " + nxt
        while (bare := re.sub(r"\([^()]*\)", "", text)) != text:
            text = bare
        names = [c.strip() for c in text.split(",")]
        if names != ["none"] and not all(re.fullmatch(r"[a-z_][a-z0-9_]*", c) for c in names):
            raise ValueError(f"warehouse/marts/{name}.sql: '-- {line}' must list columns as "
                             "'col (when …), col (when …)', or say 'none'")
        columns += [c for c in names if c != "none"]
    return tuple(columns)


@functools.cache
def all_marts() -> tuple[Mart, ...]:
    """Every mart, each after the marts it reads."""
    found = {p.name[:-4]: parse_header(p.name[:-4], p.read_text())
             for p in sorted(MART_DIR.glob("*.sql"))
             if not p.name.startswith("_") and p.name.count(".") == 1}
    ordered: list[Mart] = []
    while len(ordered) < len(found):
        for mart in found.values():
            if mart not in ordered and all(r not in found or found[r] in ordered for r in mart.reads):
                ordered.append(mart)
    return tuple(ordered)


MARTS = all_marts()
BY_NAME = {m.name: m for m in MARTS}


def marts_for(kinds: set[str]) -> list[Mart]:
    """The marts the configured sources feed: all of them read the staging of both tables; a mart
    over compliance data only is still built (empty) without a compliance source."""
    return list(MARTS) if "events" in kinds else []


# -- refresh -------------------------------------------------------------------------------

@dataclasses.dataclass
class Refreshed:
    """A mart as one refresh left it, checked before the refresh committed."""
    mart: str
    mode: str  # incremental | full
    keys: int  # unique keys recomputed (incremental)
    rows: int  # rows written
    refreshed_at: dt.datetime
    newest_processed: dt.datetime | None
    seconds: float = 0.0  # time this mart's refresh took
    # The checks, over what the refresh recomputed (incremental) or the whole mart (full):
    total_rows: int = 0  # rows the mart holds
    duplicates: int = 0  # grain values held by more than one row …
    duplicate_examples: list[tuple] = dataclasses.field(default_factory=list)  # … the first
    violations: int = 0  # rows its check query returns …
    examples: list[tuple] = dataclasses.field(default_factory=list)  # … the first of them
    columns: list[str] = dataclasses.field(default_factory=list)  # a preview: column names …
    preview: list[tuple] = dataclasses.field(default_factory=list)  # … and first rows

    @property
    def blocking_failures(self) -> list[str]:
        """The checks that failed and block the refresh: grain_unique, consistent."""
        return ([c for c, bad in (("grain_unique", self.duplicates),
                                  ("consistent", self.violations and self.mart not in WARN_ONLY))
                 if bad])


class ChecksFailed(Exception):
    """A blocking check failed: the refresh was rolled back, so nothing of it is published and
    the next refresh starts again from the last good state."""

    def __init__(self, done: list[Refreshed]) -> None:
        self.done = done
        lines = []
        for r in done:
            mart = BY_NAME[r.mart]
            if r.duplicates:
                lines.append(f"{r.mart}: grain_unique failed: {r.duplicates} value(s) of "
                             f"({', '.join(mart.grain)}) held by more than one row, e.g. "
                             f"{_shown(r.duplicate_examples)}")
            if r.violations and r.mart not in WARN_ONLY:
                lines.append(f"{r.mart}: consistent failed: {r.violations} row(s) returned by "
                             f"warehouse/marts/{r.mart}.check.sql, e.g. {_shown(r.examples)}")
        super().__init__(
            "blocking mart check(s) failed, so this refresh was rolled back and nothing was "
            "published (readers keep the previous snapshot; mart_freshness did not move):\n  "
            + "\n  ".join(lines) + "\nThe data of this refresh breaks the mart's grain or its "
            "check, or its SQL is wrong. Query the examples in the staging (stg_events of the "
            "writer's file, .warehouse/, read-only) to see which events cause it; fix the SQL or "
            "rebuild the days involved (a backfill of `events`). Every refresh until then "
            "retries the same changes and fails the same way.")


def _shown(rows: list[tuple]) -> str:
    return "; ".join(str(tuple(str(v) for v in row)) for row in rows[:3])


def prepare(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("CREATE TABLE IF NOT EXISTS mart_watermarks (name VARCHAR PRIMARY KEY, value BIGINT)")
    con.execute("CREATE TABLE IF NOT EXISTS mart_freshness (mart VARCHAR PRIMARY KEY, "
                "refreshed_at TIMESTAMPTZ, newest_processed TIMESTAMPTZ)")


def refresh(con: duckdb.DuckDBPyConnection, marts: list[Mart] | tuple[Mart, ...] = MARTS, *,
            full: bool = False) -> list[Refreshed]:
    """Bring the marts up to the staging's newest change, in one transaction: incrementally
    (the keys changed rows touch), or in full (`full`: the staging recomputed from the
    `events` / `compliance_events` views and every mart from it, O(history); a mart that does
    not exist yet, or one that reads a mart rebuilt in full)."""
    prepare(con)
    staged_by = staging_fingerprint()
    if con.execute("SELECT value FROM mart_watermarks WHERE name = ?", [STAGING_SQL]
                   ).fetchall() != [(staged_by,)]:
        full = True  # the staging's SQL changed (an upgrade): its rows, and every mart, anew
    if full:  # from the tables themselves: the staging too is recomputed
        with transaction(con):
            staging.restage_all(con, TABLES)
    watermarks = dict(con.execute("SELECT name, value FROM mart_watermarks").fetchall())
    since = watermarks.get(WATERMARK, 0)
    upto = con.execute(
        "SELECT greatest((SELECT max(changed) FROM stg_events WHERE changed > $s), "
        "(SELECT max(changed) FROM stg_removed WHERE changed > $s))", {"s": since}
    ).fetchall()[0][0] or since
    out = []
    with transaction(con):
        con.execute(f"CREATE OR REPLACE TEMP VIEW mart_changes AS "
                    f"SELECT * FROM stg_events WHERE changed > {since} AND changed <= {upto} "
                    f"UNION ALL SELECT * FROM stg_removed WHERE changed > {since} "
                    f"AND changed <= {upto}")
        con.execute("CREATE OR REPLACE TEMP VIEW mart_new_windows AS SELECT w.* FROM landing_windows w "
                    "LEFT JOIN mart_watermarks m ON m.name = 'window:' || w.source "
                    "WHERE w.window_seq > coalesce(m.value, 0)")
        newest = con.execute("SELECT max(processed) FROM mart_changes").fetchall()[0][0]
        rebuilt: set[str] = set()
        now = dt.datetime.now(dt.UTC)
        exists = {t for (t,) in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
            "AND NOT temporary").fetchall()}
        built_from = dict(con.execute("SELECT substr(name, 5), value FROM mart_watermarks "
                                      "WHERE starts_with(name, 'sql:')").fetchall())
        for mart in marts:
            t0 = time.perf_counter()
            # A mart whose SQL changed since it was built (an upgrade) is built again in full:
            # its rows, maybe its columns, are the old SQL's.
            if (full or mart.name not in exists or built_from.get(mart.name) != mart.fingerprint
                    or rebuilt & set(mart.reads)):
                rows, keys = _full(con, mart), 0
                rebuilt.add(mart.name)
                processed = con.execute("SELECT max(processed) FROM stg_events").fetchall()[0][0]
            else:
                keys, rows = _incremental(con, mart)
                previous = con.execute("SELECT newest_processed FROM mart_freshness WHERE mart = ?",
                                       [mart.name]).fetchall()
                processed = max((p for p in (newest, previous[0][0] if previous else None) if p),
                                default=None)
            con.execute("INSERT OR REPLACE INTO mart_freshness VALUES (?, ?, ?)",
                        [mart.name, now, processed])
            out.append(Refreshed(mart.name, "full" if mart.name in rebuilt else "incremental",
                                 keys, rows, now, processed, time.perf_counter() - t0))
        for r in out:  # before the commit: a blocking failure rolls the whole refresh back
            _check(con, r)
        if any(r.blocking_failures for r in out):
            raise ChecksFailed(out)
        con.execute("INSERT OR REPLACE INTO mart_watermarks VALUES (?, ?)", [WATERMARK, upto])
        for name, value in [(STAGING_SQL, staged_by),
                            *((f"sql:{m.name}", m.fingerprint) for m in marts)]:
            con.execute("INSERT OR REPLACE INTO mart_watermarks VALUES (?, ?)", [name, value])
        con.execute("INSERT OR REPLACE INTO mart_watermarks SELECT 'window:' || source, "
                    "max(window_seq) FROM mart_new_windows GROUP BY source")
        con.execute("DELETE FROM stg_removed WHERE changed <= ?", [upto])
    return out


def _full(con: duckdb.DuckDBPyConnection, mart: Mart) -> int:
    con.execute(f"CREATE OR REPLACE TEMP TABLE scope_{mart.name} AS "
                f"SELECT k FROM ({mart.touched_query}) LIMIT 0")
    _scope_macros(con, mart, full=True)
    con.execute(f"CREATE OR REPLACE TABLE {mart.name} AS {mart.query}")
    rowmap.forget(con, rowmap.Table(mart.name, mart.unique_key))
    _record_patch(con, mart, whole=True)
    return con.execute(f"SELECT count(*) FROM {mart.name}").fetchall()[0][0]


def _incremental(con: duckdb.DuckDBPyConnection, mart: Mart) -> tuple[int, int]:
    """Delete the touched keys, insert them computed again; returns (keys, rows written)."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE scope_{mart.name} AS "
                f"SELECT DISTINCT k FROM ({mart.touched_query}) WHERE k IS NOT NULL")
    keys = con.execute(f"SELECT count(*) FROM scope_{mart.name}").fetchall()[0][0]
    if not keys:
        con.execute(f"CREATE OR REPLACE TEMP TABLE rows_{mart.name} AS "
                    f"SELECT * FROM {mart.name} LIMIT 0")
        return 0, 0
    _scope_macros(con, mart, full=False)
    # By the mart's row map where it keeps one (a few rows of a big mart: no scan of its keys).
    rowmap.delete_keys(con, rowmap.Table(mart.name, mart.unique_key),
                       f"SELECT k FROM scope_{mart.name}")
    # The rows computed again are kept for the publish and the scoped checks too: they read
    # them from here rather than finding them in the mart (a scan of the key column of every
    # row group, and of every column of each row group they fall in).
    con.execute(f"CREATE OR REPLACE TEMP TABLE rows_{mart.name} AS {mart.query}")
    rows = con.execute(f"INSERT INTO {mart.name} SELECT * FROM rows_{mart.name}").fetchall()[0][0]
    _record_patch(con, mart, whole=False)
    return keys, rows


def _record_patch(con: duckdb.DuckDBPyConnection, mart: Mart, *, whole: bool) -> None:
    """Tell the publishes (warehouse/store.py) what changed in the mart, under the number of the
    publish that will show it: that it changed whole (`publish_log`), or the keys it recomputed
    (`publish_keys_<mart>`) and the rows it computed for them (`publish_rows_<mart>`), so a
    publish patches an older snapshot instead of copying the mart."""
    publish = pending_publish(con)
    keys, rows = f"publish_keys_{mart.name}", f"publish_rows_{mart.name}"
    if whole:
        con.execute("INSERT INTO publish_log VALUES (?, ?)", [publish, mart.name])
        # Every snapshot older than this publish now copies the mart whole: the patches recorded
        # so far are of no use, and their tables may have the columns of an older mart.
        con.execute(f"DROP TABLE IF EXISTS {keys}")
        con.execute(f"DROP TABLE IF EXISTS {rows}")
        return
    con.execute(f"CREATE TABLE IF NOT EXISTS {keys} AS "
                f"SELECT 0::BIGINT AS publish, k FROM scope_{mart.name} LIMIT 0")
    con.execute(f"CREATE TABLE IF NOT EXISTS {rows} AS "
                f"SELECT 0::BIGINT AS publish, * FROM rows_{mart.name} LIMIT 0")
    con.execute(f"INSERT INTO {keys} SELECT ?, k FROM scope_{mart.name}", [publish])
    # A refresh whose session did not publish left rows under the same number: these replace them.
    con.execute(f"DELETE FROM {rows} WHERE publish = ? AND {mart.unique_key} IN "
                f"(SELECT k FROM scope_{mart.name})", [publish])
    con.execute(f"INSERT INTO {rows} SELECT ?, * FROM rows_{mart.name}", [publish])


def _scope_macros(con: duckdb.DuckDBPyConnection, mart: Mart, *, full: bool) -> None:
    """`in_scope(key)`: is the key one this refresh recomputes (dbt's `is_incremental()` filter);
    `in_scope_row(rowid)`: is the staged row one whose column named like the mart's unique key
    holds such a key (for keys scattered over the whole staging: the rows of a session a late
    CLOSE ends can be days old); `scope_floor()`: a constant lower bound on `processed` for marts
    keyed by its hour, so the scan skips older row groups."""
    if full:
        run_script(con, "CREATE OR REPLACE TEMP MACRO in_scope(scoped_key) AS true;\n"
                        "CREATE OR REPLACE TEMP MACRO in_scope_row(row_id) AS true;\n"
                        "CREATE OR REPLACE TEMP MACRO scope_floor() AS '-infinity'::TIMESTAMPTZ;")
        return
    run_script(con, f"CREATE OR REPLACE TEMP MACRO in_scope(scoped_key) AS "
                    f"scoped_key IN (SELECT k FROM scope_{mart.name});")
    if "in_scope_row(" in mart.query:
        # Two steps: the row ids first (from the staging's row map, warehouse/rowmap.py, or a
        # scan of the one key column), then only those rows. One step would read the wide
        # columns (session ids…) of every row group that holds a key, and a few keys of old
        # sessions are in nearly all of them.
        rowmap.find_rows(con, rowmap.Table("stg_events", mart.unique_key),
                         f"SELECT k FROM scope_{mart.name}", f"scope_rows_{mart.name}")
        con.execute(f"CREATE OR REPLACE TEMP MACRO in_scope_row(row_id) AS "
                    f"row_id IN (SELECT r FROM scope_rows_{mart.name})")
    floor = "'-infinity'::TIMESTAMPTZ"
    if mart.unique_key == "hour_utc":
        (first,) = con.execute(f"SELECT min(k) FROM scope_{mart.name}").fetchall()[0]
        floor = f"TIMESTAMPTZ '{first.isoformat()}+00:00'"
    con.execute(f"CREATE OR REPLACE TEMP MACRO scope_floor() AS {floor}")


# -- checks and previews -------------------------------------------------------------------

def _scoped(mart: Mart, sql: str, scoped: bool) -> str:
    """`sql` over the keys this refresh recomputed only: the mart itself is read from the rows
    the refresh computed (`rows_<mart>`: after the refresh, exactly the mart's rows of those
    keys, as it deleted every row of them and inserted these), so the check costs what the
    refresh touched; each other mart it names is filtered by its unique key (marts that read
    each other share the key's domain)."""
    if not scoped:
        return sql
    for other in MARTS:
        table = (f"rows_{other.name}" if other == mart else
                 f"(SELECT * FROM {other.name} WHERE {other.unique_key} IN "
                 f"(SELECT k FROM scope_{mart.name}))")
        sql = re.sub(rf"\b(FROM|JOIN)\s+{other.name}\b", rf"\1 {table}", sql)
    return sql


def grain_duplicates(con: duckdb.DuckDBPyConnection, mart: Mart, limit: int = 5,
                     scoped: bool = False) -> tuple[int, list[tuple]]:
    """Grain values held by more than one row, and the first of them (scoped: among the keys
    the refresh recomputed; a grain determines its unique key, so no duplicate spans recomputed
    and other keys)."""
    cols = ", ".join(mart.grain)
    rows = con.execute(_scoped(mart, f"SELECT {cols}, count(*) AS n FROM {mart.name} "
                                     "GROUP BY ALL HAVING count(*) > 1", scoped)).fetchall()
    return len(rows), rows[:limit]


def violations(con: duckdb.DuckDBPyConnection, mart: Mart, limit: int = 5,
               scoped: bool = False) -> tuple[int, list[tuple]]:
    rows = con.execute(_scoped(mart, mart.check_query, scoped)).fetchall()
    return len(rows), rows[:limit]


def _check(con: duckdb.DuckDBPyConnection, r: Refreshed) -> None:
    """Check a mart the refresh wrote, at the cost of what it touched: an incremental refresh's
    over the keys it recomputed, a full refresh's over everything."""
    mart = BY_NAME[r.mart]
    scoped = r.mode == "incremental"
    r.violations, r.examples = violations(con, mart, scoped=scoped)
    r.duplicates, r.duplicate_examples = grain_duplicates(con, mart, scoped=scoped)
    r.total_rows = con.execute(f"SELECT count(*) FROM {mart.name}").fetchall()[0][0]
    r.columns, r.preview = preview(con, mart)


def preview(con: duckdb.DuckDBPyConnection, mart: Mart, limit: int = 5
            ) -> tuple[list[str], list[tuple]]:
    """The column names and first rows (for Dagster metadata)."""
    rel = con.sql(f"SELECT * FROM {mart.name} LIMIT {limit}")
    return rel.columns, rel.fetchall()
