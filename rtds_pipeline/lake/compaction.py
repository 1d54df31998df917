"""Compaction of settled landing days, and the lake's housekeeping.

Windows land one small file per day they touch, so a day collects thousands of files. Once a day
has settled (it is older than `settle_days`; late events still arrive for 90 days, they only add
a few files), its small files are rewritten into a few large ones, sorted by `occurred` then
stream position, and a `compaction` record supersedes them atomically: readers of committed
files see either the old files or the new ones, never both and never neither. The rows are the
same (same `window_seq`, `window_pos`, `raw`), so a rebuild of the day gives the same `events`.

Cost: a day is rewritten only when it holds more than `max_files` files, and only its small files
(under half of `target_bytes`) are merged while they are enough to matter, so a big day is not
rewritten for every late event. The sort runs in DuckDB (it spills to disk) and the output is
streamed to Parquet: memory stays bounded by DuckDB's limit whatever the size of the day.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import tempfile
import time
import uuid
from collections.abc import Iterator

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from rtds_pipeline.lake.batch import LANDING_SCHEMA
from rtds_pipeline.lake.commits import COMPACTION, Commit, CommitConflict, CommitLog, LandedFile
from rtds_pipeline.lake.live import (
    ORPHAN_GRACE_S,
    SUPERSEDED_RETENTION_S,
    LakeState,
    collect_orphans,
    delete_superseded,
    load_state,
    write_checkpoint,
)
from rtds_pipeline.lake.storage import Lake
from rtds_pipeline.lake.writer import landing_dir, write_parquet_batches
from rtds_pipeline.settings import COMPACT_MAX_FILES, COMPACT_MIN_AGE_HOURS, COMPACT_SETTLE_DAYS

TARGET_BYTES = 1 << 30  # largest compacted file
BATCH_ROWS = 128 * 1024
COMMIT_ATTEMPTS = 20
MIN_FILE_AGE_S = COMPACT_MIN_AGE_HOURS * 3600


@dataclasses.dataclass
class DayCompaction:
    source: str
    day: str
    seq: int  # the compaction record
    files_before: int
    files_after: int
    rows: int
    bytes_before: int
    bytes_after: int


@dataclasses.dataclass
class Housekeeping:
    source: str
    compacted: list[DayCompaction]
    superseded_deleted: list[str]
    orphans_deleted: list[str]
    live_files: int
    days: int
    max_files_per_settled_day: int


def settled(day: str, today: dt.date, settle_days: int = COMPACT_SETTLE_DAYS) -> bool:
    try:
        return dt.date.fromisoformat(day) <= today - dt.timedelta(days=settle_days)
    except ValueError:
        return True  # the "unknown" day (no readable timestamp) never gets newer


def plan_day(files: list[LandedFile], max_files: int = COMPACT_MAX_FILES,
             target_bytes: int = TARGET_BYTES) -> list[list[LandedFile]]:
    """Groups of files to merge (one output file each); empty if the day is fine as it is.
    Small files first; big ones join only if the small ones cannot bring the day to `max_files`."""
    if len(files) <= max_files:
        return []
    small = [f for f in files if f.bytes < target_bytes // 2]
    big = [f for f in files if f.bytes >= target_bytes // 2]
    if len(big) + len(_groups(small, target_bytes)) > max_files:
        small, big = files, []
    groups = _groups(small, target_bytes)
    return [g for g in groups if len(g) > 1] if len(big) + len(groups) < len(files) else []


def _groups(files: list[LandedFile], target_bytes: int) -> list[list[LandedFile]]:
    """Consecutive files by time, cut when a group would pass `target_bytes`."""
    out: list[list[LandedFile]] = []
    size = 0
    for f in sorted(files, key=lambda f: (f.min_occurred or "", f.path)):
        if not out or size + f.bytes > target_bytes:
            out.append([])
            size = 0
        out[-1].append(f)
        size += f.bytes
    return out


def _sorted_rows(con: duckdb.DuckDBPyConnection, urls: list[str]) -> Iterator[pa.RecordBatch]:
    reader = con.sql(
        "SELECT * FROM read_parquet($urls, hive_partitioning = false) "
        "ORDER BY occurred NULLS LAST, window_seq, window_pos",
        params={"urls": urls}).to_arrow_reader(BATCH_ROWS)
    for batch in reader:
        yield pa.RecordBatch.from_arrays(
            [batch.column(f.name).cast(f.type) for f in LANDING_SCHEMA], schema=LANDING_SCHEMA)


def _merge(con: duckdb.DuckDBPyConnection, lake: Lake, source: str, day: str,
           group: list[LandedFile]) -> LandedFile:
    rel = f"{landing_dir(source, day)}/compacted-{uuid.uuid4().hex[:16]}.parquet"
    rows = {"read": 0}
    span: dict[str, dt.datetime] = {}  # "lo" and "hi" of `occurred`, once a row has one

    def counted() -> Iterator[pa.RecordBatch]:
        for batch in _sorted_rows(con, [lake.url_of(f.path) for f in group]):
            rows["read"] += batch.num_rows
            bounds = pc.min_max(batch.column("occurred"))
            lo, hi = bounds["min"].as_py(), bounds["max"].as_py()
            if lo is not None:
                span["lo"] = min(span.get("lo", lo), lo)
                span["hi"] = max(span.get("hi", hi), hi)
            yield batch

    size = write_parquet_batches(lake, rel, counted())
    expected = sum(f.rows for f in group)
    if rows["read"] != expected:
        lake.fs.rm(lake.path(rel))
        raise RuntimeError(f"compaction of {source} {day} read {rows['read']} rows from files "
                           f"that list {expected}: left the day as it was")
    return LandedFile(rel, rows["read"], size, day,
                      span["lo"].isoformat() if span else None,
                      span["hi"].isoformat() if span else None)


def _commit(log: CommitLog, files: list[LandedFile], replaces: list[str]) -> Commit | None:
    """Commit at the next free sequence number; None if another compaction got there first."""
    for _ in range(COMMIT_ATTEMPTS):
        last = log.latest()
        if last is None:
            return None
        commit = Commit(
            source=log.source, window_seq=last.window_seq + 1, resume_offset=last.resume_offset,
            previous_offset=last.resume_offset, first_offset=None, files=files,
            dead_letter_files=[], events=0, dead_letters=0, offset_updates=0, keepalives=0,
            reconnects=0, bytes_read=0, max_processed=last.max_processed,
            committed_at=time.time(), stop_reason="compaction", kind=COMPACTION,
            replaces=replaces)
        newer = log.since(last.window_seq)  # a replaced file superseded meanwhile: give up
        if any(p in c.replaces for c in newer for p in replaces):
            return None
        try:
            log.write(commit, discard_on_conflict=False)  # retried below with the same files
            return commit
        except CommitConflict:
            continue  # a window committed meanwhile: windows never supersede, so try the next
    return None


def compact_source(lake: Lake, source: str, *, today: dt.date | None = None,
                   max_files: int = COMPACT_MAX_FILES, target_bytes: int = TARGET_BYTES,
                   settle_days: int = COMPACT_SETTLE_DAYS, memory_limit: str = "1GB",
                   min_file_age_s: float = MIN_FILE_AGE_S,
                   state: LakeState | None = None) -> list[DayCompaction]:
    """Compact every settled day of `source` that holds more than `max_files` files (counting
    only files committed at least `min_file_age_s` ago)."""
    log = CommitLog(lake, source)
    state = state or load_state(log)
    today = today or dt.datetime.now(dt.UTC).date()
    old_enough = time.time() - min_file_age_s
    done = []
    with tempfile.TemporaryDirectory(prefix="rtds-compact-") as spill:
        con = duckdb.connect(config={"memory_limit": memory_limit, "temp_directory": spill,
                                     "preserve_insertion_order": False})
        try:
            if not lake.is_local:
                con.register_filesystem(lake.fs)
            for day, files in sorted(state.by_day().items()):
                if not settled(day, today, settle_days):
                    continue
                files = [f for f in files if state.committed_at.get(f.path, 0) <= old_enough]
                groups = plan_day(files, max_files, target_bytes)
                if not groups:
                    continue
                written = []
                try:
                    for group in groups:
                        written.append(_merge(con, lake, source, day, group))
                    replaces = [f.path for g in groups for f in g]
                    commit = _commit(log, written, replaces)
                except BaseException:
                    _remove(lake, written)
                    raise
                if commit is None:
                    _remove(lake, written)
                    continue
                done.append(DayCompaction(
                    source, day, commit.window_seq, len(files),
                    len(files) - len(replaces) + len(written), sum(f.rows for f in written),
                    sum(f.bytes for g in groups for f in g), sum(f.bytes for f in written)))
        finally:
            con.close()
    return done


def _remove(lake: Lake, files: list[LandedFile]) -> None:
    for f in files:
        try:
            lake.fs.rm(lake.path(f.path))
        except FileNotFoundError:
            pass


def housekeep(lake: Lake, source: str, *, today: dt.date | None = None,
              max_files: int = COMPACT_MAX_FILES, target_bytes: int = TARGET_BYTES,
              settle_days: int = COMPACT_SETTLE_DAYS, superseded_retention_s: float = SUPERSEDED_RETENTION_S,
              orphan_grace_s: float = ORPHAN_GRACE_S, memory_limit: str = "1GB",
              min_file_age_s: float = MIN_FILE_AGE_S) -> Housekeeping:
    """Everything the lake needs now and then, for one source: compact settled days, delete
    files superseded longer than the retention, delete orphans, write the checkpoint."""
    log = CommitLog(lake, source)
    compacted = compact_source(lake, source, today=today, max_files=max_files,
                               target_bytes=target_bytes, settle_days=settle_days,
                               memory_limit=memory_limit, min_file_age_s=min_file_age_s)
    state = load_state(log)
    gone = delete_superseded(lake, log, state, superseded_retention_s)
    orphans = collect_orphans(lake, log, orphan_grace_s, state)
    if state.seq:
        write_checkpoint(log, state)
    today = today or dt.datetime.now(dt.UTC).date()
    days = state.by_day()
    settled_counts = [len(fs) for d, fs in days.items() if settled(d, today, settle_days)]
    return Housekeeping(source, compacted, gone, orphans, len(state.live), len(days),
                        max(settled_counts, default=0))
