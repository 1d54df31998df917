"""`events` and `compliance_events`: committed landing windows → Delta tables in the lake.

Two ways in, one result (invariant 3):
- **load** (`load_pending`): the committed windows the warehouse has not loaded yet, a batch at a
  time. Cost O(batch): an id's copies carry its `occurred`, so they meet in its occurred day, and
  the batch's ids are looked up by key in their days' key stores (`warehouse/keys.py`); new ids
  are appended to their occurred day, copies of ids already kept are counted, never written.
- **rebuild** (`rebuild_days`, backfills): whole days recomputed from their committed landing
  files and swapped in atomically. Gives the same rows as the loads did.
- **the horizon**: the key stores hold the hot days only, the days within `hot_hours` of the
  newest `processed` loaded (the stream's clock, not the machine's). A window's rows of an older
  day (a late device) are not loaded by the window: the day is recorded in `cold_days` and
  rebuilt from its landing files by `fold_in_cold` (the maintenance job), so no window ever pays
  for a day it cannot probe, and the local state does not grow with the history.
Settled days are compacted (`compact_days`): rewritten as one sorted file with late copies
folded in. Only files that a commit record lists are read (invariant 1).

Every Delta commit carries the load's batch number as an application transaction, and the
batch is recorded in `load_batches` before the commit: a crash between the Delta commit and the
warehouse's own bookkeeping is finished on the next start, never appended twice.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Sequence
from pathlib import Path

import duckdb
import pyarrow as pa

from rtds_pipeline.lake.commits import WINDOW, CommitLog
from rtds_pipeline.lake.storage import Lake
from rtds_pipeline.settings import SourceConfig
from rtds_pipeline.warehouse import keys, staging
from rtds_pipeline.warehouse.delta import PARTITION as _PARTITION
from rtds_pipeline.warehouse.delta import DeltaEvents
from rtds_pipeline.warehouse.sqlscripts import meta, run_script, set_meta, sql, transaction

TABLES = {"events": "events", "compliance": "compliance_events"}  # what a source feeds → table

LOAD_BYTES = 64 << 20  # landed Parquet per load batch (one window at least): bounds its cost
REBUILD_BYTES = 1 << 30  # landed Parquet per rebuild pass
HOT_HOURS = 72.0  # the horizon's default (RTDS_HOT_HOURS): days within it of the newest `processed`
KEYS_VARIABLE = "rtds_keys_dir"  # DuckDB variable: where the writer keeps its key stores


@dataclasses.dataclass
class WindowCheck:
    """What a load or rebuild can check at its own cost: the good ids its files landed are all
    kept (`missing`), each once (`duplicated`)."""
    landed_ids: int
    missing: int  # good landed (id, day)s of the loaded windows that the table will not hold
    duplicated: int  # of those, how many it would hold more than once

    @property
    def ok(self) -> bool:
        return self.missing == 0 and self.duplicated == 0


class LoadCheckFailed(RuntimeError):
    """A batch's blocking check failed before anything of it was written: the load stops there
    (readers keep the previous snapshot) and every later load retries that batch first."""

    def __init__(self, table: str, batch: int, check: WindowCheck) -> None:
        self.table, self.batch, self.check = table, batch, check
        super().__init__(
            f"{table}: load batch {batch} failed its checks before writing anything: of "
            f"{check.landed_ids} good ids its windows landed, {check.missing} would not be kept "
            f"(reconciliation) and {check.duplicated} would be kept twice (unique_id). Nothing "
            f"was appended or published; every load retries this batch first, so `{table}` "
            "stays at its last good state until it passes. This is a bug in the load, not in "
            "the data: report it with the batch's windows (table landing_windows, load_batch = "
            f"{batch}, in the writer's file under .warehouse/).")


@dataclasses.dataclass
class LoadResult:
    table: str
    batches: list[int] = dataclasses.field(default_factory=list)
    windows: int = 0
    landed_rows: int = 0
    rows: int = 0  # rows written
    copies_dropped: int = 0  # landed rows not written: later copies, or ids kept elsewhere
    quarantined: int = 0
    deferred: int = 0  # landed rows of days behind the horizon: loaded by `fold_in_cold`
    days: dict[str, int] = dataclasses.field(default_factory=dict)  # rows written per day
    rebuilt: list[str] = dataclasses.field(default_factory=list)  # days recomputed
    max_processed: dt.datetime | None = None
    check: WindowCheck = dataclasses.field(default_factory=lambda: WindowCheck(0, 0, 0))

    def add(self, other: LoadResult) -> None:
        self.batches += other.batches
        for f in ("windows", "landed_rows", "rows", "copies_dropped", "quarantined", "deferred"):
            setattr(self, f, getattr(self, f) + getattr(other, f))
        for d, n in other.days.items():
            self.days[d] = self.days.get(d, 0) + n
        self.rebuilt = sorted({*self.rebuilt, *other.rebuilt})
        self.check = WindowCheck(*(a + b for a, b in zip(dataclasses.astuple(self.check),
                                                          dataclasses.astuple(other.check),
                                                          strict=True)))
        if other.max_processed and (not self.max_processed or other.max_processed > self.max_processed):
            self.max_processed = other.max_processed


@dataclasses.dataclass
class FullCheck:
    """The whole table against the whole landing zone: O(history), run apart (a scheduled job)."""
    table: str
    rows: int
    distinct_ids: int  # distinct (id, occurred day): the table's grain
    landed_ids: int  # distinct good (id, occurred day) landed, cold days not folded in left out
    missing: int  # of those, how many the table does not hold
    hot_rows: int  # rows of the hot days …
    index_keys: int  # … and the keys their stores hold: equal
    ids_in_two_days: int = 0  # ids kept in more than one day (the one corner, see README)

    @property
    def ok(self) -> bool:
        return (self.rows == self.distinct_ids == self.landed_ids and not self.missing
                and self.hot_rows == self.index_keys)


def table_sql(name: str, table: str) -> str:
    """A SQL file written for `{table}` (events or compliance_events)."""
    return sql(name).replace("{table}", table)


def prepare(con: duckdb.DuckDBPyConnection) -> None:
    """The writer's tables and the connection's macros (idempotent)."""
    con.execute(sql("schema"))
    for table in TABLES.values():
        con.execute(table_sql("table_schema", table))
    con.execute(sql("landed"))
    staging.prepare(con)


# -- the horizon ---------------------------------------------------------------------------

def key_store(con: duckdb.DuckDBPyConnection, table: str) -> keys.KeyStore:
    """The key store of `table`'s hot days, in the writer's private folder."""
    root = con.execute(f"SELECT getvariable('{KEYS_VARIABLE}')").fetchall()[0][0]
    if root is None:
        raise RuntimeError("the key stores are opened by Warehouse.writer(): use its connection")
    return keys.shared(Path(root) / table)


def hot_floor(con: duckdb.DuckDBPyConnection, table: str,
              newest: dt.datetime | None = None) -> dt.date:
    """The first hot day of `table`: the day `hot_hours` before the newest `processed` loaded
    (or `newest`, a batch's, when later), and never before the floor a load used last (a longer
    horizon set later does not bring a dropped day's keys back: those days stay cold). Before
    any, every day is hot."""
    clock = max((c for c in (_clock(con, table), newest) if c is not None), default=None)
    dropped = meta(con, f"keys_from:{table}")
    floor = dt.date.fromisoformat(dropped) if dropped else dt.date.min
    if clock is None:
        return floor
    hours = float(meta(con, "hot_hours") or HOT_HOURS)
    return max(floor, (clock.astimezone(dt.UTC) - dt.timedelta(hours=hours)).date())


def _clock(con: duckdb.DuckDBPyConnection, table: str) -> dt.datetime | None:
    value = meta(con, f"clock:{table}")
    return dt.datetime.fromisoformat(value) if value else None


def cold_days(con: duckdb.DuckDBPyConnection, kind: str) -> list[str]:
    """Days behind the horizon that loads brought rows of and `fold_in_cold` has not rebuilt."""
    return [str(d) for (d,) in con.execute(
        "SELECT DISTINCT day FROM cold_days WHERE table_name = ? ORDER BY 1",
        [TABLES[kind]]).fetchall()]


def fold_in_cold(con: duckdb.DuckDBPyConnection, lake: Lake, kind: str) -> LoadResult:
    """Rebuild the cold days loads brought rows of, from their landing files (the maintenance
    job's: O(those days), never inside a window)."""
    days = cold_days(con, kind)
    return rebuild_days(con, lake, kind, days) if days else LoadResult(TABLES[kind])


# -- the manifest --------------------------------------------------------------------------

def sync_manifest(con: duckdb.DuckDBPyConnection, lake: Lake,
                  sources: Iterable[SourceConfig]) -> int:
    """Record the commits the warehouse has not seen yet (reads only those). Returns how many.

    A landing compaction record replaces window files with merged ones. If a window it replaces
    is not loaded yet, the sync stops before that record: the window is loaded from its own files
    first (superseded files stay readable for a retention period), then the next sync applies it.
    """
    added = 0
    for source in sources:
        seen = con.execute("SELECT coalesce(max(window_seq), 0) FROM landing_windows "
                           "WHERE source = ?", [source.key]).fetchall()[0][0]
        new = _until_pending_replaced(con, lake, CommitLog(lake, source.key).since(seen))
        if not new:
            continue
        kind = source.feeds
        # A compaction record replaces files and brings no new data: nothing to load.
        is_data = [c.kind == WINDOW for c in new]
        windows = pa.table({
            "source": [c.source for c in new], "kind": [kind] * len(new),
            "window_seq": [c.window_seq for c in new], "events": [c.events for c in new],
            "dead_letters": [c.dead_letters for c in new],
            "first_offset": [c.first_offset for c in new],
            "resume_offset": [c.resume_offset for c in new],
            "max_processed": pa.array([c.max_processed for c in new], pa.string()),
            "committed_at": [dt.datetime.fromtimestamp(c.committed_at, dt.UTC) for c in new],
            "stop_reason": [c.stop_reason for c in new],
            "load_batch": pa.array([None if d else 0 for d in is_data], pa.int64())})
        files = [(c, f) for c in new for f in (*c.files, *c.dead_letter_files)]
        manifest = pa.table({
            "source": [c.source for c, _ in files], "kind": [kind] * len(files),
            "window_seq": pa.array([c.window_seq for c, _ in files], pa.int64()),
            "path": pa.array([lake.url_of(f.path) for _, f in files], pa.string()),
            "day": pa.array([f.day for _, f in files], pa.string()),
            "rows": pa.array([f.rows for _, f in files], pa.int64()),
            "bytes": pa.array([f.bytes for _, f in files], pa.int64())})
        replaced = [lake.url_of(p) for c in new for p in c.replaces]
        # One transaction: a window recorded without its files would never be read again.
        con.register("new_windows", windows)
        con.register("new_files", manifest)
        try:
            with transaction(con):
                con.execute("INSERT INTO landing_windows SELECT source, kind, window_seq, events, "
                            "dead_letters, first_offset, resume_offset, "
                            "max_processed::TIMESTAMPTZ, committed_at, stop_reason, load_batch "
                            "FROM new_windows")
                con.execute("INSERT INTO landing_files SELECT * FROM new_files")
                if replaced:
                    con.execute("DELETE FROM landing_files WHERE list_contains(?, path)", [replaced])
        finally:
            con.unregister("new_windows")
            con.unregister("new_files")
        added += len(new)
    return added


def _until_pending_replaced(con: duckdb.DuckDBPyConnection, lake: Lake,
                            new: list) -> list:
    """The records before the first compaction that replaces a file of a window not loaded yet
    (recorded and pending, or earlier in `new`)."""
    for i, c in enumerate(new):
        replaced = {lake.url_of(p) for p in c.replaces}
        if not replaced:
            continue
        unloaded = {lake.url_of(f.path) for w in new[:i] if w.kind == WINDOW
                    for f in w.files}
        pending = con.execute(
            "SELECT count(*) FROM landing_files f JOIN landing_windows w USING (source, window_seq) "
            "WHERE w.load_batch IS NULL AND list_contains(?, f.path)", [sorted(replaced)]
        ).fetchall()[0][0]
        if pending or unloaded & replaced:
            return new[:i]
    return new


def load_all(con: duckdb.DuckDBPyConnection, lake: Lake, sources: Sequence[SourceConfig],
             kind: str) -> LoadResult:
    """Sync and load until nothing is pending: what a load run does."""
    result = LoadResult(TABLES[kind])
    while True:
        synced = sync_manifest(con, lake, sources)
        loaded = load_pending(con, lake, kind)
        result.add(loaded)
        if not synced and not loaded.batches:
            return result


def day_files(con: duckdb.DuckDBPyConnection, kind: str,
              days: Sequence[str]) -> dict[str, list[tuple[str, int]]]:
    """The committed files (path, bytes) of each day."""
    rows = con.execute("SELECT day, path, bytes FROM landing_files WHERE kind = ? "
                       "AND list_contains(?, day) ORDER BY day, path", [kind, list(days)]).fetchall()
    out: dict[str, list[tuple[str, int]]] = {d: [] for d in days}
    for day, path, size in rows:
        out[day].append((path, size))
    return out


def landed_days(con: duckdb.DuckDBPyConnection, kind: str) -> list[str]:
    return [r[0] for r in con.execute(
        "SELECT DISTINCT day FROM landing_files WHERE kind = ? AND day <> 'dead_letter' "
        "ORDER BY 1", [kind]).fetchall()]


# -- loads ---------------------------------------------------------------------------------

def _plan(con: duckdb.DuckDBPyConnection, lake: Lake, kind: str, mode: str,
          days: Sequence[str] | None = None,
          windows: Sequence[tuple[str, int]] = ()) -> int:
    """Record the next batch (and its windows) before its Delta commit. A batch left planned by
    a crash is finished first: batch numbers, the Delta commits' versions, only ever grow."""
    table = TABLES[kind]
    recover(con, lake, kind)
    with transaction(con):
        batch = con.execute("SELECT coalesce(max(batch), 0) + 1 FROM load_batches "
                            "WHERE table_name = ?", [table]).fetchall()[0][0]
        con.execute("INSERT INTO load_batches VALUES (?, ?, ?, ?, 'planned', now(), NULL)",
                    [table, batch, mode, list(days) if days is not None else None])
        if windows:
            con.execute("UPDATE landing_windows SET load_batch = ? WHERE (source, window_seq) "
                        "IN (SELECT unnest(?), unnest(?))",
                        [batch, [s for s, _ in windows], [q for _, q in windows]])
    return batch


def _app_id(table: str) -> str:
    return f"rtds_pipeline/{table}"


def _pending(con: duckdb.DuckDBPyConnection, kind: str, budget: int) -> list[tuple[str, int]]:
    """The next pending windows (source, window_seq) in commit order, up to `budget` bytes."""
    rows = con.execute(
        "SELECT w.source, w.window_seq, coalesce(sum(f.bytes), 0) FROM landing_windows w "
        "LEFT JOIN landing_files f ON f.source = w.source AND f.window_seq = w.window_seq "
        "AND f.day <> 'dead_letter' WHERE w.kind = ? AND w.load_batch IS NULL "
        "GROUP BY ALL ORDER BY min(w.committed_at), w.source, w.window_seq", [kind]).fetchall()
    out: list[tuple[str, int]] = []
    size = 0
    for source, seq, nbytes in rows:
        if out and size + nbytes > budget:
            break
        out.append((source, seq))
        size += nbytes
    return out


def load_pending(con: duckdb.DuckDBPyConnection, lake: Lake, kind: str,
                 budget: int = LOAD_BYTES) -> LoadResult:
    """Load every committed window not loaded yet, `budget` landed bytes per batch."""
    result = LoadResult(TABLES[kind])
    recover(con, lake, kind)
    while True:
        windows = _pending(con, kind, budget)
        if not windows:
            if result.batches:
                refresh_views(con, lake)
            return result
        batch = _plan(con, lake, kind, "window", windows=windows)
        result.add(_load_batch(con, lake, kind, batch))


def _batch_files(con: duckdb.DuckDBPyConnection, kind: str, batch: int) -> list[tuple]:
    return con.execute(
        "SELECT f.path, f.source, f.window_seq FROM landing_files f JOIN landing_windows w "
        "USING (source, window_seq) WHERE w.kind = ? AND w.load_batch = ? "
        "AND f.day <> 'dead_letter' ORDER BY f.source, f.window_seq, f.path",
        [kind, batch]).fetchall()


def _load_batch(con: duckdb.DuckDBPyConnection, lake: Lake, kind: str, batch: int) -> LoadResult:
    """Stage, append and record one planned batch; safe to run again after a crash."""
    table = TABLES[kind]
    delta = DeltaEvents(lake, table)
    result = LoadResult(table, batches=[batch])
    result.windows, result.max_processed = con.execute(
        "SELECT count(*), max(max_processed) FROM landing_windows WHERE kind = ? AND load_batch = ?",
        [kind, batch]).fetchall()[0]
    floor = hot_floor(con, table, result.max_processed)
    files = _readable(con, table, _batch_files(con, kind, batch))
    store = key_store(con, table)
    if files:
        run_script(con, table_sql("load_window", table), {"files": files, "hot_floor": floor})
        hits = store.probe(con.sql("SELECT day, h, l FROM stage_keep").to_arrow_table())
        con.register("key_hits", hits)
        try:
            run_script(con, table_sql("load_window_probe", table), {"batch": batch})
        finally:
            con.unregister("key_hits")
        new_rows = con.execute("SELECT count(*) FROM stage_probe WHERE kept_day IS NULL"
                               ).fetchall()[0][0]
        result.check = _check_load(con, files, floor)  # blocking: before anything is written
        if not result.check.ok:
            raise LoadCheckFailed(table, batch, result.check)
        if new_rows and delta.loaded_version(_app_id(table)) < batch:
            # Streamed: a batch is never held whole in Python's memory.
            delta.append(con.sql(table_sql("load_window_rows", table)).to_arrow_reader(),
                         _app_id(table), batch)
        store.put(con.sql("SELECT day, h, l, pos, source FROM stage_probe "
                          "WHERE kept_day IS NULL").to_arrow_table(), batch)
        earlier = con.execute(
            "SELECT DISTINCT day FROM stage_probe WHERE kept_day IS NOT NULL "
            "AND (pos, source) < (kept_pos, kept_source)").fetchall()
        with transaction(con):
            result.quarantined = _quarantine(con, table)
            # The marts' change log moves with the keys: the new rows, then later copies.
            staging.stage(con, kind, table_sql("load_window_rows", table))
            staging.add_late_copies(con, kind, "SELECT id, n FROM stage_late_copies")
            run_script(con, table_sql("load_window_end", table),
                       {"batch": batch, "hot_floor": floor})
            _advance_clock(con, table, result.max_processed)
            _finish_batch(con, table, batch, new_rows)
        result.landed_rows, result.rows = con.execute(
            "SELECT coalesce(sum(landed_rows), 0), coalesce(sum(rows), 0) FROM load_log "
            "WHERE table_name = ? AND batch = ?", [table, batch]).fetchall()[0]
        result.copies_dropped = result.landed_rows - result.rows
        result.deferred = con.execute(
            "SELECT count(*) FROM stage WHERE reason IS NULL AND occurred_date < ?",
            [floor]).fetchall()[0][0]
        result.days = {str(d): n for d, n in con.execute(
            "SELECT day, rows FROM load_log WHERE table_name = ? AND batch = ? AND rows > 0",
            [table, batch]).fetchall()}
        if earlier:
            # An earlier copy of a kept id came later: only when two sources read one stream.
            # Its day is recomputed from landing, as a backfill would.
            result.add(rebuild_days(con, lake, kind, sorted(str(d) for (d,) in earlier)))
    else:
        with transaction(con):
            _advance_clock(con, table, result.max_processed)
            _finish_batch(con, table, batch, 0)
    # Days behind the horizon: the lake has them. The floor only moves on, whatever horizon is
    # set later: a day left cold (keys dropped, or rows deferred) stays cold.
    floor = hot_floor(con, table)
    store.drop_before(floor)
    if floor > dt.date.min:
        set_meta(con, f"keys_from:{table}", floor.isoformat())
    return result


def _advance_clock(con: duckdb.DuckDBPyConnection, table: str,
                   newest: dt.datetime | None) -> None:
    clock = _clock(con, table)
    if newest is not None and (clock is None or newest > clock):
        set_meta(con, f"clock:{table}", newest.astimezone(dt.UTC).isoformat())


def _check_load(con: duckdb.DuckDBPyConnection, files: list[str], floor: dt.date) -> WindowCheck:
    """O(batch): the good (id, day)s of the batch's hot days, read again from its files, against
    what the load decided to write — new keys (rows to append) plus ids kept before — and none
    to be written twice. The whole table against the whole landing zone is `full_check`, in the
    maintenance job."""
    landed = con.execute("SELECT count(DISTINCT (id, occurred_date)) FROM landed(?) "
                         "WHERE reason IS NULL AND occurred_date >= ?", [files, floor]
                         ).fetchall()[0][0]
    new, new_distinct, kept = con.execute(
        "SELECT count(*) FILTER (WHERE kept_day IS NULL), "
        "count(DISTINCT (id, day)) FILTER (WHERE kept_day IS NULL), "
        "count(DISTINCT (id, day)) FILTER (WHERE kept_day IS NOT NULL) FROM stage_probe"
    ).fetchall()[0]
    # missing < 0 would mean ids kept that these files never landed: not ok either.
    return WindowCheck(landed, landed - new_distinct - kept, new - new_distinct)


def _finish_batch(con: duckdb.DuckDBPyConnection, table: str, batch: int, rows: int) -> None:
    con.execute("UPDATE load_batches SET state = 'done', rows = ? WHERE table_name = ? AND batch = ?",
                [rows, table, batch])


def _readable(con: duckdb.DuckDBPyConnection, table: str, files: list[tuple]) -> list[str]:
    """The files DuckDB can read; one it cannot (corrupt, truncated, not UTF-8) is quarantined
    with the error instead of blocking its day."""
    paths = [f[0] for f in files]
    if not paths:
        return []
    try:
        con.execute("SELECT count(*) FROM landed(?)", [paths]).fetchall()
        return paths
    except duckdb.Error:
        pass
    good = []
    for path, source, seq in files:
        try:
            con.execute("SELECT count(*) FROM landed(?)", [[path]]).fetchall()
            good.append(path)
        except duckdb.Error as exc:
            con.execute(f"INSERT INTO {table}_quarantine VALUES (now(), ?, ?, ?, NULL, NULL, ?, NULL)",
                        [source, seq, path, f"unreadable file: {exc}"[:2000]])
    return good


def _quarantine(con: duckdb.DuckDBPyConnection, table: str) -> int:
    """Move the staged rows that break the contract to the quarantine table."""
    return con.execute(
        f"INSERT INTO {table}_quarantine SELECT now(), source, window_seq, NULL, id, rtds_offset, "
        "reason, raw::VARCHAR FROM stage WHERE reason IS NOT NULL").fetchall()[0][0]


def recover(con: duckdb.DuckDBPyConnection, lake: Lake, kind: str) -> None:
    """Finish a load, rebuild or compaction that was planned but not recorded (a crash)."""
    table = TABLES[kind]
    for batch, mode, days in con.execute(
            "SELECT batch, mode, days FROM load_batches WHERE table_name = ? AND state = 'planned' "
            "ORDER BY batch", [table]).fetchall():
        if mode == "window":
            _load_batch(con, lake, kind, batch)
        elif mode == "rebuild":
            _rebuild_batch(con, lake, kind, batch, list(days))
        else:
            _compact_batch(con, lake, kind, batch, list(days)[0])


# -- rebuilds (backfills) ------------------------------------------------------------------

def rebuild_days(con: duckdb.DuckDBPyConnection, lake: Lake, kind: str, days: Sequence[str],
                 batch_bytes: int = REBUILD_BYTES) -> LoadResult:
    """Recompute these days from their committed landing files; idempotent, and the same rows
    as the loads give. Pending windows are loaded first, so nothing is counted twice."""
    table = TABLES[kind]
    result = LoadResult(table)
    result.add(load_pending(con, lake, kind))
    files = day_files(con, kind, days)
    for group in _groups(files, batch_bytes):
        batch = _plan(con, lake, kind, "rebuild", group)
        result.add(_rebuild_batch(con, lake, kind, batch, group))
    refresh_views(con, lake)
    return result


def _groups(files: dict[str, list[tuple[str, int]]], limit: int) -> list[list[str]]:
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


def _rebuild_batch(con: duckdb.DuckDBPyConnection, lake: Lake, kind: str, batch: int,
                   days: list[str]) -> LoadResult:
    table = TABLES[kind]
    delta = DeltaEvents(lake, table)
    paths = _readable(con, table, [(p, None, None) for d, fs in day_files(con, kind, days).items()
                                   for p, _ in fs])
    dates = [dt.date.fromisoformat(d) for d in days]
    params = {"files": paths, "days": dates}
    if paths:
        run_script(con, table_sql("events_batch", table), params)
    else:  # no landed files left for these days: they become empty
        run_script(con, "CREATE OR REPLACE TEMP TABLE batch_landed AS SELECT NULL::UHUGEINT AS k, "
                   "NULL::VARCHAR AS id, NULL::DATE AS day LIMIT 0;\n"
                   "CREATE OR REPLACE TEMP TABLE batch_final AS SELECT NULL::UHUGEINT AS k, "
                   "NULL::UBIGINT AS h, NULL::UBIGINT AS l, NULL::VARCHAR AS id, "
                   "NULL::UBIGINT AS pos, NULL::VARCHAR AS source, NULL::DATE AS day, "
                   "NULL::INTEGER AS n LIMIT 0;")
    if delta.loaded_version(_app_id(table)) < batch:
        reader = (con.sql(table_sql("rebuild_rows", table), params={"files": paths})
                  .to_arrow_reader() if paths else _empty_rows(con))
        delta.replace_days(reader, days, _app_id(table), batch)
    # The hot days' keys anew (a cold day's are not kept: its next late rows rebuild it again).
    floor = hot_floor(con, table)
    store = key_store(con, table)
    store.drop_days(dates)
    store.put(con.sql("SELECT day, h, l, pos, source FROM batch_final WHERE day >= ?",
                      params=[floor]).to_arrow_table(), batch)
    with transaction(con):
        staging.restage_days(con, kind, dates, table_sql("rebuild_rows", table) if paths else
                             "SELECT * FROM events_columns", {"files": paths} if paths else {})
        run_script(con, table_sql("events_batch_end", table), {"days": dates, "batch": batch})
        rows = con.execute("SELECT count(*) FROM batch_final").fetchall()[0][0]
        _finish_batch(con, table, batch, rows)
    landed = con.execute("SELECT count(*) FROM batch_landed").fetchall()[0][0]
    per_day = {str(d): n for d, n in con.execute(
        "SELECT day, count(*) FROM batch_final GROUP BY day").fetchall()}
    return LoadResult(table, batches=[batch], landed_rows=landed, rows=rows,
                      copies_dropped=landed - rows, days=per_day, rebuilt=list(days))


def _empty_rows(con: duckdb.DuckDBPyConnection) -> pa.Table:
    return con.sql("SELECT * FROM events_columns").to_arrow_table()


# -- compaction of settled days ------------------------------------------------------------

def days_to_compact(con: duckdb.DuckDBPyConnection, lake: Lake, kind: str,
                    settle_hours: float, now: dt.datetime | None = None) -> list[str]:
    """Days that ended at least `settle_hours` ago and hold more than one file or late copies."""
    table = TABLES[kind]
    now = now or dt.datetime.now(dt.UTC)
    cutoff = (now - dt.timedelta(hours=settle_hours) - dt.timedelta(days=1)).date().isoformat()
    counts = DeltaEvents(lake, table).file_counts()
    late = {str(d) for (d,) in con.execute(
        f"SELECT DISTINCT occurred_date FROM {table}_late_copies").fetchall()}
    return sorted(d for d in set(counts) | late if d <= cutoff and (counts.get(d, 0) > 1 or d in late))


def compact_days(con: duckdb.DuckDBPyConnection, lake: Lake, kind: str,
                 days: Sequence[str]) -> list[str]:
    """Rewrite each day as sorted files with late copies folded in (one atomic commit a day)."""
    done = []
    for day in days:
        batch = _plan(con, lake, kind, "compact", [day])
        _compact_batch(con, lake, kind, batch, day)
        done.append(day)
    refresh_views(con, lake)
    return done


def _compact_batch(con: duckdb.DuckDBPyConnection, lake: Lake, kind: str, batch: int,
                   day: str) -> None:
    table = TABLES[kind]
    delta = DeltaEvents(lake, table)
    if delta.loaded_version(_app_id(table)) < batch:
        files = [f for f in delta.files() if f"occurred_date={day}/" in f]
        if files:
            reader = con.sql(table_sql("compact_rows", table),
                             params={"files": files, "day": dt.date.fromisoformat(day)}
                             ).to_arrow_reader()
            delta.replace_days(reader, [day], _app_id(table), batch)
    with transaction(con):
        con.execute(f"DELETE FROM {table}_late_copies WHERE occurred_date = ?",
                    [dt.date.fromisoformat(day)])
        con.execute("INSERT INTO load_log VALUES (?, ?, now(), ?, 'compact', 0, 0, 0)",
                    [table, day, batch])
        _finish_batch(con, table, batch, 0)


# -- checks --------------------------------------------------------------------------------

def check_days(con: duckdb.DuckDBPyConnection, lake: Lake, kind: str,
               days: Sequence[str]) -> WindowCheck:
    """Every good (id, day) landed for these days is in the table exactly once: O(those days),
    the landing files against the Delta table's files of those days."""
    table = TABLES[kind]
    landed = [p for fs in day_files(con, kind, days).values() for p, _ in fs]
    kept = [f for f in DeltaEvents(lake, table).files()
            if any(f"{_PARTITION}={d}/" in f for d in days)]
    if not landed:
        return WindowCheck(0, 0, 0)
    table_rows = (f"read_parquet({_listed(kept)}, hive_partitioning = true, "
                  "hive_types = {'occurred_date': DATE})" if kept
                  else "(SELECT NULL::VARCHAR AS id, NULL::DATE AS occurred_date LIMIT 0)")
    got = con.execute(
        f"WITH ids AS (SELECT DISTINCT id, occurred_date FROM landed(?) WHERE reason IS NULL), "
        f"kept AS (SELECT id, occurred_date, count(*) AS n FROM {table_rows} GROUP BY ALL) "
        f"SELECT (SELECT count(*) FROM ids), "
        f"(SELECT count(*) FROM ids i ANTI JOIN kept k USING (id, occurred_date)), "
        f"(SELECT count(*) FROM kept WHERE n > 1)", [landed]).fetchall()[0]
    return WindowCheck(*got)


def full_check(con: duckdb.DuckDBPyConnection, lake: Lake, kind: str) -> FullCheck:
    """The whole table: (id, day) unique, every landed one kept, the hot days' keys equal to
    their rows."""
    table = TABLES[kind]
    files = DeltaEvents(lake, table).files()
    floor = hot_floor(con, table)
    rows, distinct, hot_rows, two_days = con.execute(
        "SELECT count(*), count(DISTINCT (id, occurred_date)), "
        "count(*) FILTER (WHERE occurred_date >= ?), count(DISTINCT id) FILTER (WHERE n > 1) "
        "FROM (SELECT id, occurred_date, count(DISTINCT occurred_date) OVER (PARTITION BY id) AS n "
        "      FROM read_parquet(?, hive_partitioning = true, "
        "                        hive_types = {'occurred_date': DATE}))",
        [floor, files]).fetchall()[0] if files else (0, 0, 0, 0)
    store = key_store(con, table)
    index_keys = sum(store.count(d) for d in store.days() if d >= floor)
    cold = cold_days(con, kind)
    landed = [p for d, fs in day_files(con, kind, landed_days(con, kind)).items()
              if d not in cold for p, _ in fs]
    if landed and files:
        landed_ids, missing = con.execute(
            "WITH ids AS (SELECT DISTINCT id, occurred_date FROM landed(?) WHERE reason IS NULL) "
            "SELECT (SELECT count(*) FROM ids), (SELECT count(*) FROM ids ANTI JOIN "
            "(SELECT id, occurred_date FROM read_parquet(?, hive_partitioning = true, "
            "hive_types = {'occurred_date': DATE})) USING (id, occurred_date))",
            [landed, files]).fetchall()[0]
    elif landed:
        landed_ids = missing = con.execute(
            "SELECT count(DISTINCT (id, occurred_date)) FROM landed(?) WHERE reason IS NULL",
            [landed]).fetchall()[0][0]
    else:
        landed_ids, missing = 0, 0
    return FullCheck(table, rows, distinct, landed_ids, missing, hot_rows, index_keys, two_days)


def _listed(files: Sequence[str]) -> str:
    return "[" + ", ".join("'" + f.replace("'", "''") + "'" for f in files) + "]"


def quarantined(con: duckdb.DuckDBPyConnection, kind: str) -> tuple[int, list[tuple]]:
    table = TABLES[kind]
    n = con.execute(f"SELECT count(*) FROM {table}_quarantine").fetchall()[0][0]
    examples = con.execute(f"SELECT source, window_seq, coalesce(id, path), reason "
                           f"FROM {table}_quarantine ORDER BY quarantined_at DESC LIMIT 5").fetchall()
    return n, examples


def dead_letters_near(con: duckdb.DuckDBPyConnection, kind: str, days: Sequence[str]) -> int:
    """Dead letters in the windows that landed rows of these days (they have no date of their own)."""
    return con.execute(sql("dead_letters_near"), {"kind": kind, "days": list(days)}).fetchall()[0][0]


# -- views ---------------------------------------------------------------------------------

def view_sql(con: duckdb.DuckDBPyConnection, lake: Lake, table: str, late: str) -> str:
    """The SELECT behind the `table` view: the Delta table's current files, or no rows yet."""
    files = DeltaEvents(lake, table).files()
    if not files:
        return "SELECT * FROM events_columns"
    return sql("table_view").replace("{files}", _listed(files)).replace("{late}", late)


def refresh_views(con: duckdb.DuckDBPyConnection, lake: Lake) -> None:
    """`events` / `compliance_events` views in the writer's file over the newest snapshots."""
    for table in TABLES.values():
        con.execute(f"CREATE OR REPLACE VIEW {table} AS "
                    f"{view_sql(con, lake, table, f'{table}_late_copies')}")


def forget_tables(lake: Lake) -> None:
    """Remove the lake's curated tables: the writer's state is new, so they are recomputed from
    the landing zone (the source of truth) rather than trusted without their keys."""
    for table in TABLES.values():
        lake.remove_tree("tables", table)
