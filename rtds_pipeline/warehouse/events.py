"""Building `events` and `compliance_events` per occurred day from committed landing files.

Only files that a commit record lists are read (invariant 1: an uncommitted file does not
exist). The warehouse keeps a manifest of them (`landing_files`), synced incrementally from
the lake's commit log, which doubles as lineage for every row.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from collections.abc import Iterable, Sequence

import duckdb
import pyarrow as pa

from rtds_pipeline.lake.commits import CommitLog
from rtds_pipeline.lake.storage import Lake
from rtds_pipeline.settings import SourceConfig
from rtds_pipeline.warehouse.store import run_script, sql

TABLES = {"events": "events", "compliance": "compliance_events"}  # source kind → table


BATCH_BYTES = 1 << 30  # landed Parquet per build pass: bounds memory however many days are asked
INSERT_BYTES = 64 << 20  # landed Parquet per INSERT (one sort, bounded memory); small days share one


@dataclasses.dataclass
class DayBuild:
    table: str
    day: str
    files: int
    landed_rows: int
    rows: int
    copies_dropped: int  # later copies, or copies kept in another day


@dataclasses.dataclass
class Reconciliation:
    day: str
    landed_unique: int
    rows: int
    kept_elsewhere: int
    missing: int  # landed ids that are nowhere in the table
    not_landed: int  # rows of the day whose id did not land for that day

    @property
    def ok(self) -> bool:
        return (self.rows + self.kept_elsewhere == self.landed_unique
                and self.missing == 0 and self.not_landed == 0)


def table_sql(name: str, table: str) -> str:
    """A SQL file written for `{table}` (events or compliance_events)."""
    return sql(name).replace("{table}", table)


def sync_manifest(con: duckdb.DuckDBPyConnection, lake: Lake,
                  sources: Iterable[SourceConfig]) -> int:
    """Record the commits the warehouse has not seen yet. Returns how many were added."""
    added = 0
    for source in sources:
        seen = con.execute("SELECT coalesce(max(window_seq), 0) FROM landing_windows "
                           "WHERE source = ?", [source.key]).fetchall()[0][0]
        log = CommitLog(lake, source.key)
        new = log.since(seen)
        if not new:
            continue
        windows = pa.table({
            "source": [c.source for c in new], "kind": [source.kind] * len(new),
            "window_seq": [c.window_seq for c in new], "events": [c.events for c in new],
            "dead_letters": [c.dead_letters for c in new],
            "first_offset": [c.first_offset for c in new],
            "resume_offset": [c.resume_offset for c in new],
            "max_processed": pa.array([c.max_processed for c in new], pa.string()),
            "committed_at": [dt.datetime.fromtimestamp(c.committed_at, dt.UTC) for c in new],
            "stop_reason": [c.stop_reason for c in new]})
        files = [(c, f) for c in new for f in (*c.files, *c.dead_letter_files)]
        manifest = pa.table({
            "source": [c.source for c, _ in files], "kind": [source.kind] * len(files),
            "window_seq": pa.array([c.window_seq for c, _ in files], pa.int64()),
            "path": pa.array([lake.url_of(f.path) for _, f in files], pa.string()),
            "day": pa.array([f.day for _, f in files], pa.string()),
            "rows": pa.array([f.rows for _, f in files], pa.int64()),
            "bytes": pa.array([f.bytes for _, f in files], pa.int64())})
        con.register("new_windows", windows)
        con.register("new_files", manifest)
        # One transaction: a window recorded without its files would never be read again.
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute("INSERT INTO landing_windows SELECT source, kind, window_seq, events, "
                        "dead_letters, first_offset, resume_offset, max_processed::TIMESTAMPTZ, "
                        "committed_at, stop_reason FROM new_windows")
            con.execute("INSERT INTO landing_files SELECT * FROM new_files")
            # A compaction record's files replace those it lists (same rows): not new data.
            # After the insert: the files it replaces may have come in this same batch.
            gone = [lake.url_of(p) for c in new for p in c.replaces]
            if gone:
                con.execute("DELETE FROM landing_files WHERE list_contains(?, path)", [gone])
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        finally:
            con.unregister("new_windows")
            con.unregister("new_files")
        added += len(new)
    return added


def day_files(con: duckdb.DuckDBPyConnection, kind: str,
              days: Sequence[str]) -> dict[str, list[tuple[str, int]]]:
    """The committed files (path, bytes) of each day."""
    rows = con.execute("SELECT day, path, bytes FROM landing_files WHERE kind = ? "
                       "AND list_contains(?, day) ORDER BY day, path", [kind, list(days)]).fetchall()
    out: dict[str, list[tuple[str, int]]] = {d: [] for d in days}
    for day, path, size in rows:
        out[day].append((path, size))
    return out


def fingerprint(files: Sequence[tuple[str, int]]) -> str:
    return hashlib.sha1("\n".join(sorted(p for p, _ in files)).encode()).hexdigest()


def current_days(con: duckdb.DuckDBPyConnection, kind: str, days: Sequence[str]) -> set[str]:
    """Days last built from exactly the files committed for them now (nothing to rebuild)."""
    built = dict(con.execute(
        "SELECT day::VARCHAR, arg_max(manifest, built_at) FROM load_log WHERE table_name = ? "
        "GROUP BY day", [TABLES[kind]]).fetchall())
    return {d for d, files in day_files(con, kind, days).items()
            if built.get(d) == fingerprint(files)}


def batches(files: dict[str, list[tuple[str, int]]], limit: int) -> list[list[str]]:
    """Consecutive groups of days whose landed bytes stay under `limit` (one day at least)."""
    out: list[list[str]] = []
    size = 0
    for day in sorted(files):
        day_bytes = sum(b for _, b in files[day])
        if not out or size + day_bytes > limit:
            out.append([])
            size = 0
        out[-1].append(day)
        size += day_bytes
    return out


def build_days(con: duckdb.DuckDBPyConnection, kind: str, days: Sequence[str],
               batch_bytes: int = BATCH_BYTES) -> list[DayBuild]:
    """Replace these days of the kind's table. Each batch of days is one transaction; rebuilding
    is idempotent, and the result does not depend on how days are grouped or ordered."""
    table = TABLES[kind]
    files = day_files(con, kind, days)
    builds = []
    for group in batches(files, batch_bytes):
        paths = [p for d in group for p, _ in files[d]]
        dates = [dt.date.fromisoformat(d) for d in group]
        con.execute("BEGIN TRANSACTION")
        try:
            if paths:
                params = {"files": paths, "days": dates}
                run_script(con, table_sql("events_batch", table), params)
                # DuckDB guesses read_parquet's row count from one file (thousands for millions
                # of rows) and would build its hash tables on the wide landed rows: the joins
                # are written with the small narrow tables on the build side; keep it so.
                con.execute("SET disabled_optimizers = 'join_order,build_side_probe_side'")
                try:
                    for days_ in batches({d: files[d] for d in group}, INSERT_BYTES):
                        con.execute(table_sql("events_day_insert", table),
                                    {"files": [p for d in days_ for p, _ in files[d]]})
                finally:
                    con.execute("RESET disabled_optimizers")
                run_script(con, table_sql("events_batch_end", table), params)
                stats = {str(d): (landed, rows) for d, landed, rows in
                         con.execute("SELECT day, landed_rows, rows FROM batch_stats").fetchall()}
            else:
                con.execute(f"DELETE FROM {table} WHERE list_contains(?, occurred_date)", [dates])
                stats = {}
            for d in group:
                landed, rows = stats.get(d, (0, 0))
                b = DayBuild(table, d, len(files[d]), landed, rows, landed - rows)
                con.execute("INSERT INTO load_log VALUES (?, ?, now(), ?, ?, ?, ?, ?)",
                            [table, d, b.files, b.landed_rows, b.rows, b.copies_dropped,
                             fingerprint(files[d])])
                builds.append(b)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    return builds


def build_day(con: duckdb.DuckDBPyConnection, kind: str, day: str) -> DayBuild:
    return build_days(con, kind, [day])[0]


def reconcile_days(con: duckdb.DuckDBPyConnection, kind: str,
                   days: Sequence[str]) -> list[Reconciliation]:
    table = TABLES[kind]
    files = day_files(con, kind, days)
    paths = [p for d in days for p, _ in files[d]]
    dates = [dt.date.fromisoformat(d) for d in days]
    if not paths:
        rows = dict(con.execute(f"SELECT occurred_date::VARCHAR, count(*) FROM {table} "
                                "WHERE list_contains(?, occurred_date) GROUP BY 1", [dates]).fetchall())
        return [Reconciliation(d, 0, rows.get(d, 0), 0, 0, rows.get(d, 0)) for d in days]
    got = con.execute(table_sql("reconcile_days", table),
                      {"files": paths, "days": dates}).fetchall()
    return [Reconciliation(*r) for r in got]


def reconcile_day(con: duckdb.DuckDBPyConnection, kind: str, day: str) -> Reconciliation:
    return reconcile_days(con, kind, [day])[0]


def duplicate_ids(con: duckdb.DuckDBPyConnection, kind: str, days: Sequence[str]) -> list[tuple]:
    return con.execute(table_sql("duplicate_ids", TABLES[kind]),
                       {"days": [dt.date.fromisoformat(d) for d in days]}).fetchall()


def dead_letters_near(con: duckdb.DuckDBPyConnection, kind: str, days: Sequence[str]) -> int:
    """Dead letters in the windows that landed rows of these days (they have no date of their own)."""
    return con.execute(sql("dead_letters_near"), {"kind": kind, "days": list(days)}).fetchall()[0][0]
