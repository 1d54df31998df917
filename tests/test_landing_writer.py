"""The landing writer on its own: flushing by size keeps every row once, one small file per day."""

from __future__ import annotations

import collections

import orjson
import pyarrow.parquet as pq

from rtds_pipeline.lake.batch import parse_batch
from rtds_pipeline.lake.storage import open_lake
from rtds_pipeline.lake.writer import HELD_ROWS, SMALL_SLICE_ROWS, LandingWriter


def test_flushes_keep_every_row_once_and_small_days_in_one_file_per_window(tmp_path):
    lake = open_lake(str(tmp_path))
    writer = LandingWriter(lake, "events", 1, flush_bytes=1)  # a flush after every batch
    offset = 0
    late_days = ["2026-09-01", "2026-09-02", "2026-10-15"]
    for batch_no in range(10):
        lines = []
        for i in range(SMALL_SLICE_ROWS + 1000):
            offset += 1
            day = late_days[i % 3] if i % 50 == 0 else "2026-11-20"
            lines.append(orjson.dumps({"id": f"e{offset}", "type": "OPEN", "offset": f"{10**12 + offset}",
                                       "occurred": f"{day}T10:00:00.000Z",
                                       "processed": "2026-11-20T10:00:00.000Z"}))
        writer.add(parse_batch(b"\n".join(lines) + b"\n", 1, batch_no * 10_000))
    assert 10 * (SMALL_SLICE_ROWS + 1000) // 50 < HELD_ROWS  # late rows never force a write
    files, dead = writer.finish()
    assert not dead
    per_day = collections.Counter(f.day for f in files)
    assert all(per_day[d] == 1 for d in late_days), per_day  # held back, written once at the end
    assert per_day["2026-11-20"] == 10  # the big day is written at every flush
    ids, offsets_in_order = [], True
    for f in files:
        t = pq.read_table(lake.path(f.path), columns=["id", "rtds_offset"])
        offs = [int(o) for o in t.column("rtds_offset").to_pylist()]
        offsets_in_order &= offs == sorted(offs)
        ids += t.column("id").to_pylist()
        assert f.rows == t.num_rows
    assert offsets_in_order
    assert sorted(ids) == sorted(f"e{i}" for i in range(1, offset + 1))
