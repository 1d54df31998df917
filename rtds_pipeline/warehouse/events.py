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


@dataclasses.dataclass
class DayBuild:
    table: str
    day: str
    files: int
    landed_rows: int
    rows: int
    duplicates: int
    kept_elsewhere: int


@dataclasses.dataclass
class Reconciliation:
    landed_unique: int
    rows: int
    kept_elsewhere: int
    not_landed: int

    @property
    def ok(self) -> bool:
        return self.rows + self.kept_elsewhere == self.landed_unique and self.not_landed == 0


def file_url(lake: Lake, rel: str) -> str:
    path = lake.path(rel)
    return path if lake.is_local else f"{lake.protocol}://{path}"


def sync_manifest(con: duckdb.DuckDBPyConnection, lake: Lake,
                  sources: Iterable[SourceConfig]) -> int:
    """Record the commits the warehouse has not seen yet. Returns how many were added."""
    added = 0
    for source in sources:
        seen = con.execute("SELECT coalesce(max(window_seq), 0) FROM landing_windows "
                           "WHERE source = ?", [source.key]).fetchall()[0][0]
        log = CommitLog(lake, source.key)
        new = [log.read(s) for s in log.sequences() if s > seen]
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
            "path": pa.array([file_url(lake, f.path) for _, f in files], pa.string()),
            "day": pa.array([f.day for _, f in files], pa.string()),
            "rows": pa.array([f.rows for _, f in files], pa.int64()),
            "bytes": pa.array([f.bytes for _, f in files], pa.int64())})
        con.register("new_windows", windows)
        con.register("new_files", manifest)
        con.execute("INSERT INTO landing_windows SELECT source, kind, window_seq, events, "
                    "dead_letters, first_offset, resume_offset, max_processed::TIMESTAMPTZ, "
                    "committed_at, stop_reason FROM new_windows")
        con.execute("INSERT INTO landing_files SELECT * FROM new_files")
        con.unregister("new_windows")
        con.unregister("new_files")
        added += len(new)
    return added


def day_files(con: duckdb.DuckDBPyConnection, kind: str, day: str) -> list[str]:
    rows = con.execute("SELECT path FROM landing_files WHERE kind = ? AND day = ? ORDER BY path",
                       [kind, day]).fetchall()
    return [r[0] for r in rows]


def fingerprint(files: Sequence[str]) -> str:
    return hashlib.sha1("\n".join(sorted(files)).encode()).hexdigest()


def is_current(con: duckdb.DuckDBPyConnection, kind: str, day: str) -> bool:
    """Whether the day was last built from exactly the files committed for it now."""
    last = con.execute("SELECT manifest FROM load_log WHERE table_name = ? AND day = ? "
                       "ORDER BY built_at DESC LIMIT 1", [TABLES[kind], day]).fetchall()
    return bool(last) and last[0][0] == fingerprint(day_files(con, kind, day))


def build_day(con: duckdb.DuckDBPyConnection, kind: str, day: str) -> DayBuild:
    """Replace one day of the kind's table, in one transaction. Idempotent."""
    table = TABLES[kind]
    files = day_files(con, kind, day)
    con.execute("BEGIN TRANSACTION")
    try:
        if files:
            run_script(con, sql("events_day").format(table=table),
                       {"files": files, "day": dt.date.fromisoformat(day),
                        "manifest": fingerprint(files)})
        else:
            con.execute(f"DELETE FROM {table} WHERE occurred_date = $day", {"day": day})
            con.execute("INSERT INTO load_log VALUES (?, ?, now(), 0, 0, 0, 0, 0, ?)",
                        [table, day, fingerprint(files)])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    row = con.execute("SELECT files, landed_rows, rows, duplicates, kept_elsewhere FROM load_log "
                      "WHERE table_name = ? AND day = ? ORDER BY built_at DESC LIMIT 1",
                      [table, day]).fetchall()[0]
    return DayBuild(table, day, *row)


def reconcile_day(con: duckdb.DuckDBPyConnection, kind: str, day: str) -> Reconciliation:
    table = TABLES[kind]
    files = day_files(con, kind, day)
    if not files:
        rows = con.execute(f"SELECT count(*) FROM {table} WHERE occurred_date = ?",
                           [day]).fetchall()[0][0]
        return Reconciliation(0, rows, 0, rows)
    got = con.execute(sql("reconcile_day").format(table=table),
                      {"files": files, "day": dt.date.fromisoformat(day)}).fetchall()[0]
    return Reconciliation(*got)


def duplicate_ids(con: duckdb.DuckDBPyConnection, kind: str, day: str) -> list[tuple]:
    return con.execute(sql("duplicate_ids").format(table=TABLES[kind]),
                       {"day": dt.date.fromisoformat(day)}).fetchall()


def dead_letters_near(con: duckdb.DuckDBPyConnection, kind: str, day: str) -> int:
    """Dead letters in the windows that landed rows of this day (they have no date of their own)."""
    return con.execute(
        "SELECT coalesce(sum(w.dead_letters), 0) FROM landing_windows w "
        "WHERE w.kind = ? AND (w.source, w.window_seq) IN "
        "(SELECT source, window_seq FROM landing_files WHERE kind = ? AND day = ?)",
        [kind, kind, day]).fetchall()[0][0]
