"""The landing writer on its own: flushing by size keeps every row once, one small file per day."""

from __future__ import annotations

import collections

import orjson
import pyarrow.parquet as pq
import pytest

from rtds_pipeline.extract.reader import _Pipeline
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


def test_a_day_held_in_pieces_lands_in_stream_order_named_by_its_offset_range(tmp_path):
    # The day's rows reach the writer as a big slice, a late handful, a big slice: the handful
    # is held at once, the big slices at the flush (too few to write then): held out of order.
    lake = open_lake(str(tmp_path))
    writer = LandingWriter(lake, "events", 1)
    offset = 0
    for batch_no, rows in enumerate((1500, 10, 1500)):
        lines = []
        for _ in range(rows):
            offset += 1
            lines.append(orjson.dumps({"id": f"e{offset}", "type": "OPEN", "offset": f"{10**12 + offset}",
                                       "occurred": "2026-11-01T10:00:00.000Z",
                                       "processed": "2026-11-20T10:00:00.000Z"}))
        writer.add(parse_batch(b"\n".join(lines) + b"\n", 1, batch_no * 10_000))
    writer.flush()
    files, _ = writer.finish()
    assert [f.rows for f in files] == [3010]
    offsets = pq.read_table(lake.path(files[0].path)).column("rtds_offset").to_pylist()
    assert offsets == [f"{10**12 + i}" for i in range(1, 3011)]
    assert files[0].path.endswith(f"/{10**12 + 1}-{10**12 + 3010}.{writer.token}.parquet")


def test_an_event_without_any_timestamp_is_a_dead_letter_not_an_unknown_day(tmp_path):
    lake = open_lake(str(tmp_path))
    writer = LandingWriter(lake, "events", 1)
    lines = [{"id": f"e{i}", "type": "OPEN", "offset": f"{10**12 + i}",
              "occurred": "2026-11-20T10:00:00.000Z", "processed": "2026-11-20T10:00:01.000Z"}
             for i in range(3000)]
    lines[5] = {"id": "no-time", "type": "OPEN", "offset": f"{10**12 + 5}"}
    lines[7]["occurred"] = "2026-10-01T00:00:00.000Z"
    batch = parse_batch(b"".join(orjson.dumps(e) + b"\n" for e in lines), 1)
    assert [(d.position, d.raw) for d in batch.dead] == [(5, orjson.dumps(lines[5]))]
    assert "neither occurred nor processed" in batch.dead[0].error
    writer.add(batch)
    files, dead = writer.finish()
    by_day = {f.day: f for f in files}
    assert sorted(by_day) == ["2026-10-01", "2026-11-20"]
    assert sum(f.rows for f in files) == 2999 and dead[0].rows == 1


def test_blank_lines_are_counted_as_keepalives_and_positions_shift():
    t = b'"processed":"2026-11-20T10:00:00Z"'
    batch = parse_batch(b'\n{"id":"a","offset":"1","type":"OPEN",%s}\n\n\n{"id":"b","offset":"2","type":"OPEN",%s}\n'
                        % (t, t), 1)
    assert (batch.keepalives, batch.lines) == (3, 2)
    batch.shift_positions(100)
    assert batch.rows.column("window_pos").to_pylist() == [100, 101]


def test_a_failed_batch_stops_the_pipeline_and_nothing_after_it_lands():
    landed = []

    def land(batch):
        if batch.lines == 2:
            raise OSError("disk full")
        landed.append(batch.lines)

    def lines(n):
        return b"".join(b'{"id":"x%d","offset":"%d","type":"OPEN","processed":"2026-11-20T10:00:00Z"}\n'
                        % (i, i) for i in range(n))

    with pytest.raises(OSError, match="disk full"):
        with _Pipeline(lambda data: parse_batch(data, 1)) as pipeline:
            for n in (1, 2, 3, 4):
                pipeline.submit(lines(n), land)
            pipeline.settle()
    assert landed == [1]
