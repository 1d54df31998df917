"""Writes one window's landing rows as Parquet, partitioned by the events' `occurred` date.

Why `occurred` (UTC date) and not `processed`: it is the same for every copy of an event (copies
differ only in offset and processed), so all copies of an id land under one date, the date the
`events` table partitions by. Rebuilding a day reads one folder, deduplication never crosses
folders, and Spark/Trino/Athena can read the layout as plain Hive partitions. Events with no
parseable `occurred` fall back to their `processed` date.

Memory stays flat: rows are buffered up to `flush_bytes`, then written as one file per date,
named by the offset range it holds. Rows are grouped by date as each batch arrives and written
from those slices, never copied into one big table.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rtds_pipeline.lake.batch import LANDING_SCHEMA, DeadLetter, ParsedBatch
from rtds_pipeline.lake.commits import LandedFile
from rtds_pipeline.lake.retry import StoreRetry
from rtds_pipeline.lake.storage import Lake

FLUSH_BYTES = 16 << 20  # 32 MB measured ~30 MB more peak RSS per window and no faster
# Late events scatter over up to 90 days, a few rows per day per batch. Days with fewer than
# LATE_DAY_ROWS rows in a batch go to one "late" table per batch, written at the end of the window
# (or once HELD_ROWS rows wait): one file per day per window, and a handful of Arrow calls per
# batch instead of a few per day per batch. A day's slice smaller than SMALL_SLICE_ROWS at a
# flush waits the same way.
LATE_DAY_ROWS = 1_000
UNKNOWN_DAY = "unknown"  # neither occurred nor processed could be read
WRITES_IN_FLIGHT = 1
SMALL_SLICE_ROWS = 5_000
HELD_ROWS = 20_000


def landing_dir(source: str, day: str) -> str:
    return f"landing/source={source}/occurred_date={day}"


class LandingWriter:
    def __init__(self, lake: Lake, source: str, window_seq: int,
                 flush_bytes: int = FLUSH_BYTES, name_prefix: str = "",
                 retry: StoreRetry | None = None) -> None:
        self.lake, self.source, self.window_seq = lake, source, window_seq
        self.retry = retry or StoreRetry()
        self.flush_bytes = flush_bytes
        # Before the offset range in file names: a source whose windows can hold the same offsets
        # (the webhook: a redelivered batch) must not overwrite an earlier window's file.
        self.name_prefix = name_prefix
        # In every file name: two writers racing on a source never write (or delete) each
        # other's files, even when they read the same offsets.
        self.token = uuid.uuid4().hex[:8]
        self._days: dict[str, list[pa.Table]] = {}  # rows since the last flush, by day
        self._ids: list[pa.ChunkedArray] = []
        self._buffered = 0
        self._dead: list[DeadLetter] = []
        self._held: list[pa.Table] = []  # rows of small days, copied out of their batches
        self._held_rows = 0
        self.files: list[LandedFile] = []  # complete once finish() returns
        self.dead_files: list[LandedFile] = []
        self._writer = ThreadPoolExecutor(max_workers=2, thread_name_prefix="rtds-write")
        self._writes: list[Future[LandedFile]] = []
        # Stream quality, counted per flushed batch (exact for windows under `flush_bytes`):
        self.duplicates = 0  # rows whose id already appeared in the batch
        self.late = 0  # rows that occurred on an earlier UTC day than processed: they update past days

    def add(self, batch: ParsedBatch) -> None:
        self._dead.extend(batch.dead)
        rows = batch.rows
        if not rows.num_rows:
            return
        day = _day_of(rows)
        self.late += pc.sum(pc.less(day, pc.cast(rows.column("processed"), pa.date32()))).as_py() or 0
        self._ids.append(rows.column("id"))
        self._buffered += rows.nbytes
        # A day with many rows in the batch keeps its slice, without a copy, until the flush; the
        # few rows of late days are copied out together and held. (Measured: a filter per day
        # costs as much as the sort; slicing the unsorted runs leaves the Parquet writer
        # thousands of tiny chunks, slower.)
        small: list[pa.Table] = []
        for key, part in _split_by_day(rows, day):
            if key == UNKNOWN_DAY or part.num_rows < LATE_DAY_ROWS:
                small.append(part)
            else:
                self._days.setdefault(key, []).append(part)
        if small:
            self._hold(pa.concat_tables(small))
        if self._buffered >= self.flush_bytes:
            self.flush()

    def flush(self, final: bool = False) -> None:
        if self._ids:
            ids = pa.chunked_array([c for col in self._ids for c in col.chunks], pa.string())
            self.duplicates += len(ids) - pc.count_distinct(ids).as_py()
        days, self._days, self._ids, self._buffered = self._days, {}, [], 0
        ready: list[tuple[str, pa.Table]] = []
        for day, parts in days.items():
            fresh = pa.concat_tables(parts)  # chunked, no copy: written chunk by chunk
            if final or fresh.num_rows >= SMALL_SLICE_ROWS:
                ready.append((day, fresh))
            else:
                self._hold(fresh)
        if final or self._held_rows >= HELD_ROWS:
            ready += self._held_by_day()
        self._write_days(ready)

    def _hold(self, rows: pa.Table) -> None:
        """Keep a copy of these rows until the end of the window: a slice would keep its whole
        batch's buffers alive. Combining several chunks copies them; one chunk is copied by
        `take` (combining it would return the same view)."""
        if rows.num_rows:
            one_chunk = all(col.num_chunks == 1 for col in rows.columns)
            self._held.append(rows.take(np.arange(rows.num_rows)) if one_chunk else rows.combine_chunks())
            self._held_rows += rows.num_rows

    def _held_by_day(self) -> list[tuple[str, pa.Table]]:
        """The held rows by day, in stream order: a day may have been held out of order (a late
        handful, then at the flush the small slice of an earlier batch). One copy: the sort's
        `take` straight from the held chunks, measured as fast as combining them first, which
        was a second copy."""
        if not self._held:
            return []
        rows = pa.concat_tables(self._held)
        self._held, self._held_rows = [], 0
        day = _day_of(rows)
        order = pc.sort_indices(pa.table({"d": day, "p": rows.column("window_pos")}),
                                sort_keys=[("d", "ascending"), ("p", "ascending")])
        return _runs_by_day(rows.take(order), day.take(order))

    def _write_days(self, days: list[tuple[str, pa.Table]]) -> None:
        """Files are written on two threads while this one groups the next rows (Parquet encoding
        and fsync release the GIL); the end of a window writes one small file per late day. At
        most WRITES_IN_FLIGHT files wait, so memory stays at a few flushes."""
        self._writes += [self._writer.submit(self._write_day, day, rows) for day, rows in days]
        pending = [w for w in self._writes if not w.done()]
        while len(pending) > WRITES_IN_FLIGHT:
            pending.pop(0).result()  # re-raises a failed write

    def _write_day(self, day: str, rows: pa.Table) -> LandedFile:
        offsets = rows.column("rtds_offset")
        name = f"{self.name_prefix}{offsets[0].as_py()}-{offsets[-1].as_py()}.{self.token}.parquet"
        rel = f"{landing_dir(self.source, day)}/{name}"
        size = self.retry.call(f"write {rel}", lambda: write_parquet(self.lake, rel, rows))
        occ = rows.column("occurred")
        lo, hi = pc.min(occ).as_py(), pc.max(occ).as_py()
        return LandedFile(rel, rows.num_rows, size, day,
                          lo.isoformat() if lo else None, hi.isoformat() if hi else None)

    def finish(self) -> tuple[list[LandedFile], list[LandedFile]]:
        """Write what is left and wait until every file is durable (before the commit)."""
        self.flush(final=True)
        self.files = [w.result() for w in self._writes]
        self.close()
        if self._dead:
            rel = f"dead_letter/source={self.source}/window-{self.window_seq:010d}.{self.token}.ndjson"
            data = b"".join(d.to_json(self.window_seq) + b"\n" for d in self._dead)
            self.retry.call(f"write {rel}", lambda: self.lake.write_durable(self.lake.path(rel), data))
            size = len(data)
            self.dead_files.append(LandedFile(rel, len(self._dead), size, "dead_letter", None, None))
            self._dead = []
        return self.files, self.dead_files

    def close(self) -> None:
        """Stop writing (a window that failed): files not yet written never are; none is listed."""
        self._writer.shutdown(wait=True, cancel_futures=True)


def _day_of(rows: pa.Table) -> pa.Array:
    return pc.cast(pc.coalesce(rows.column("occurred"), rows.column("processed")),
                   pa.date32()).combine_chunks()


def _split_by_day(rows: pa.Table, day: pa.Array) -> list[tuple[str, pa.Table]]:
    """One slice per day, rows in stream order within it: one stable sort, skipped when every
    row has the same day (the usual batch)."""
    bounds = pc.min_max(day)
    if day.null_count or bounds["min"] != bounds["max"]:
        order = pc.sort_indices(pa.table({"d": day}), sort_keys=[("d", "ascending")])
        rows, day = rows.take(order), day.take(order)
    return _runs_by_day(rows, day)


def _runs_by_day(rows: pa.Table, day: pa.Array) -> list[tuple[str, pa.Table]]:
    """One slice per run of equal days (`rows` sorted by day)."""
    runs = pc.run_end_encode(day)
    out, start = [], 0
    for value, end in zip(runs.values.to_pylist(), runs.run_ends.to_pylist(), strict=True):
        out.append((str(value) if value is not None else UNKNOWN_DAY, rows.slice(start, end - start)))
        start = end
    return out


# Dictionary pages only where values repeat; no min/max statistics for the raw JSON: hashing and
# comparing every ~1 KB line cost a third of the write and no reader prunes on it.
_PARQUET_OPTIONS = dict(
    compression="zstd", row_group_size=128 * 1024,
    use_dictionary=["type", "device_type", "channel", "named_user_id", "contact_id", "push_id",
                    "group_id", "window_seq"],
    write_statistics=[f.name for f in LANDING_SCHEMA if f.name != "raw"])


def write_parquet_batches(lake: Lake, rel: str, batches: Iterable[pa.RecordBatch]) -> int:
    """Stream batches (LANDING_SCHEMA) into one Parquet file with the landing zone's options;
    durable (fsynced, or one whole object) when it returns its size."""
    options = {k: v for k, v in _PARQUET_OPTIONS.items() if k != "row_group_size"}

    def write(sink: pa.NativeFile | BinaryIO) -> None:
        with pq.ParquetWriter(sink, LANDING_SCHEMA, **options) as out:
            for batch in batches:
                out.write_batch(batch, row_group_size=_PARQUET_OPTIONS["row_group_size"])

    return lake.write_streamed(lake.path(rel), write)


def write_parquet(lake: Lake, rel: str, table: pa.Table) -> int:
    return lake.write_streamed(lake.path(rel),
                               lambda sink: pq.write_table(table, sink, **_PARQUET_OPTIONS))
