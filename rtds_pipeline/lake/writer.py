"""Writes one window's landing rows as Parquet, partitioned by the events' `occurred` date.

Why `occurred` (UTC date) and not `processed`: it is the same for every copy of an event (copies
differ only in offset and processed), so all copies of an id land under one date, the date the
`events` table partitions by. Rebuilding a day reads one folder, deduplication never crosses
folders, and Spark/Trino/Athena can read the layout as plain Hive partitions. Events with no
parseable `occurred` fall back to their `processed` date.

Memory stays flat: rows are buffered up to `flush_bytes`, then written as one file per date,
named by the offset range it holds.
"""

from __future__ import annotations

import os

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rtds_pipeline.lake.batch import DeadLetter, ParsedBatch
from rtds_pipeline.lake.commits import LandedFile
from rtds_pipeline.lake.storage import Lake

FLUSH_BYTES = 64 << 20
# Day slices smaller than this (late events scatter over up to 90 days) wait for the end of the
# window, or until HELD_ROWS rows are held: one file per day per window instead of one per flush.
SMALL_SLICE_ROWS = 5_000
HELD_ROWS = 20_000


def landing_dir(source: str, day: str) -> str:
    return f"landing/source={source}/occurred_date={day}"


class LandingWriter:
    def __init__(self, lake: Lake, source: str, window_seq: int,
                 flush_bytes: int = FLUSH_BYTES) -> None:
        self.lake, self.source, self.window_seq = lake, source, window_seq
        self.flush_bytes = flush_bytes
        self._tables: list[pa.Table] = []
        self._buffered = 0
        self._dead: list[DeadLetter] = []
        self._held: dict[str, list[pa.Table]] = {}
        self._held_rows = 0
        self.files: list[LandedFile] = []
        self.dead_files: list[LandedFile] = []
        # Stream quality, counted per flushed batch (exact for windows under `flush_bytes`):
        self.duplicates = 0  # rows whose id already appeared in the batch
        self.late = 0  # rows that occurred on an earlier UTC day than processed: they update past days

    def add(self, batch: ParsedBatch) -> None:
        if batch.rows.num_rows:
            self._tables.append(batch.rows)
            self._buffered += batch.rows.nbytes
        self._dead.extend(batch.dead)
        if self._buffered >= self.flush_bytes:
            self.flush()

    def flush(self, final: bool = False) -> None:
        if not self._tables:
            if final:
                self._write_held()
            return
        table = pa.concat_tables(self._tables)
        self._tables, self._buffered = [], 0
        day = pc.cast(pc.coalesce(table.column("occurred"), table.column("processed")), pa.date32())
        self.duplicates += table.num_rows - pc.count_distinct(table.column("id")).as_py()
        self.late += pc.sum(pc.less(day, pc.cast(table.column("processed"), pa.date32()))).as_py() or 0
        # Group rows by day with one stable sort; each day is then one contiguous slice.
        order = pc.sort_indices(pa.table({"d": day}), sort_keys=[("d", "ascending")])
        table = table.take(order)
        days = day.take(order)
        runs = pc.run_end_encode(days.combine_chunks() if hasattr(days, "combine_chunks") else days)
        start = 0
        for value, end in zip(runs.values.to_pylist(), runs.run_ends.to_pylist(), strict=True):
            day, rows = str(value) if value is not None else "unknown", table.slice(start, end - start)
            start = end
            held = self._held.pop(day, [])
            if final or rows.num_rows >= SMALL_SLICE_ROWS:
                self._write_day(day, pa.concat_tables([*held, rows]))
            else:
                # A copy: a slice would keep the whole flushed table's buffers alive.
                self._held[day] = [*held, rows.take(np.arange(rows.num_rows))]
                self._held_rows += rows.num_rows
        if final or self._held_rows >= HELD_ROWS:
            self._write_held()

    def _write_held(self) -> None:
        for day, parts in self._held.items():
            self._write_day(day, pa.concat_tables(parts))
        self._held, self._held_rows = {}, 0

    def _write_day(self, day: str, rows: pa.Table) -> None:
        offsets = rows.column("rtds_offset")
        name = f"{offsets[0].as_py()}-{offsets[-1].as_py()}.parquet"
        rel = f"{landing_dir(self.source, day)}/{name}"
        size = write_parquet(self.lake, rel, rows)
        occ = rows.column("occurred")
        lo, hi = pc.min(occ).as_py(), pc.max(occ).as_py()
        self.files.append(LandedFile(rel, rows.num_rows, size, day,
                                     lo.isoformat() if lo else None, hi.isoformat() if hi else None))

    def finish(self) -> tuple[list[LandedFile], list[LandedFile]]:
        self.flush(final=True)
        if self._dead:
            rel = f"dead_letter/source={self.source}/window-{self.window_seq:010d}.ndjson"
            data = b"".join(orjson.dumps({"window_seq": self.window_seq, "position": d.position,
                                          "error": d.error,
                                          "raw": d.raw.decode("utf-8", "backslashreplace")}) + b"\n"
                            for d in self._dead)
            self.lake.write_durable(self.lake.path(rel), data)
            size = len(data)
            self.dead_files.append(LandedFile(rel, len(self._dead), size, "dead_letter", None, None))
            self._dead = []
        return self.files, self.dead_files


def write_parquet(lake: Lake, rel: str, table: pa.Table) -> int:
    path = lake.path(rel)
    if lake.is_local:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            pq.write_table(table, f, compression="zstd", row_group_size=128 * 1024)
            f.flush()
            os.fsync(f.fileno())
            return f.tell()
    with lake.fs.open(path, "wb") as f:  # s3fs: the object exists, whole, once close() returns
        pq.write_table(table, f, compression="zstd", row_group_size=128 * 1024)
        return f.tell()
