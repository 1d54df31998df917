"""The incremental `events` path against real components: the test server's quirky stream over
many windows, crashes of the loader at random instants, and committed data that breaks the
table's contract (which must never block a day)."""

from __future__ import annotations

import dataclasses
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest
from landing import SOURCES, commit_window, event

from rtds_pipeline.extract.ingest import ingest_window
from rtds_pipeline.extract.reader import WindowLimits
from rtds_pipeline.lake.batch import parse_batch
from rtds_pipeline.lake.commits import Commit, CommitLog
from rtds_pipeline.lake.storage import open_lake
from rtds_pipeline.lake.writer import LandingWriter
from rtds_pipeline.settings import SourceConfig
from rtds_pipeline.warehouse import events as wh
from rtds_pipeline.warehouse.delta import DeltaEvents
from rtds_pipeline.warehouse.store import Warehouse

D1 = "2026-11-20"
COLUMNS = "id, type, occurred, processed, occurred_date, rtds_offset, copies, source, raw"


def table_rows(warehouse):
    return warehouse.reader().execute(f"SELECT {COLUMNS} FROM events ORDER BY id").fetchall()


def rebuild_all(tmp_path, lake_root, name, source):
    """A new warehouse over a copy of the landing zone, every landed day rebuilt at once."""
    shutil.copytree(lake_root, tmp_path / f"{name}-lake", ignore=shutil.ignore_patterns("tables"))
    lake = open_lake(str(tmp_path / f"{name}-lake"))
    warehouse = Warehouse(tmp_path / f"{name}.duckdb", lake)
    with warehouse.writer() as con:
        wh.sync_manifest(con, lake, [source])
        con.execute("UPDATE landing_windows SET load_batch = 0")  # rebuild only, no loads
        wh.rebuild_days(con, lake, "events", wh.landed_days(con, "events"))
        assert wh.full_check(con, lake, "events").ok
    return warehouse


@pytest.mark.slow
def test_quirky_stream_loaded_window_by_window_equals_a_rebuild_and_the_ground_truth(
        fresh_server, tmp_path):
    """Duplicates, late, future-clamped and out-of-order events over many small windows, each
    loaded as it commits; then the same landing rebuilt day by day from scratch."""
    srv = fresh_server(backlog=6000)
    source = SourceConfig("events", base_url=srv.url)
    lake = open_lake(str(tmp_path / "lake"))
    warehouse = Warehouse(tmp_path / "wh.duckdb", lake)
    limits = WindowLimits(max_seconds=20, max_events=150, idle_timeout=10)
    for round_ in range(60):
        outcome = ingest_window(source, lake, limits)
        if outcome.commit is None:
            break
        with warehouse.writer() as con:
            wh.sync_manifest(con, lake, [source])
            result = wh.load_pending(con, lake, "events")
            assert result.check.ok and result.check.landed_ids > 0
        if round_ == 10:
            srv.generate(800)  # live traffic between windows: more copies and late events
    with warehouse.writer() as con:
        # Events days behind the horizon: folded in by the maintenance job, not by a window.
        assert wh.cold_days(con, "events")
        wh.fold_in_cold(con, lake, "events")
        windows = con.execute("SELECT count(*) FROM landing_windows").fetchall()[0][0]
        full = wh.full_check(con, lake, "events")
        late = con.execute("SELECT count(*) FROM events_late_copies").fetchall()[0][0]
    assert windows >= 10 and full.ok
    assert late > 0  # copies arrived in later windows than their first copy: the hard case
    loaded = table_rows(warehouse)
    want = {r["id"] for r in srv.ground_truth() if r["type"] != "COMPLIANCE"}
    assert {r[0] for r in loaded} == want and len(loaded) == len(want)
    rebuilt = rebuild_all(tmp_path, lake.root, "rebuilt", source)
    assert table_rows(rebuilt) == loaded
    # Compacting every day folds the late copies in and changes no row.
    with warehouse.writer() as con:
        wh.compact_days(con, lake, "events", wh.landed_days(con, "events"))
        assert con.execute("SELECT count(*) FROM events_late_copies").fetchall()[0][0] == 0
    assert table_rows(warehouse) == loaded


LOADER = """
import sys
from rtds_pipeline.lake.storage import open_lake
from rtds_pipeline.settings import SourceConfig
from rtds_pipeline.warehouse import events as wh
from rtds_pipeline.warehouse.delta import DeltaEvents
from rtds_pipeline.warehouse.store import Warehouse
lake = open_lake(sys.argv[1])
with Warehouse(sys.argv[2], lake).writer() as con:
    wh.sync_manifest(con, lake, [SourceConfig("events")])
    wh.load_pending(con, lake, "events", budget=1)  # one window per batch: many commits
    wh.rebuild_days(con, lake, "events", wh.landed_days(con, "events")[:2])
"""


@pytest.mark.slow
def test_a_loader_killed_at_random_instants_loses_and_doubles_nothing(tmp_path):
    lake = open_lake(str(tmp_path / "lake"))
    rng = random.Random(7)
    ids = [f"e{i}" for i in range(400)]
    for w in range(30):
        events = []
        for j in range(40):  # copies of earlier ids across windows and days
            id_ = rng.choice(ids[: 40 * (w + 1)])
            day = f"2026-11-{20 + int(id_[1:]) % 3}"
            events.append(event(id_, "OPEN", f"{day}T10:{j:02d}:00.000Z", w * 100 + j))
        commit_window(lake, "events", events)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    args = [sys.executable, "-c", LOADER, lake.root, str(tmp_path / "wh.duckdb")]
    kills = 0
    for _ in range(12):
        proc = subprocess.Popen(args, env=env)
        time.sleep(rng.uniform(0.5, 3.0))  # not synchronisation: a random instant to kill at
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 3
    subprocess.run(args, env=env, check=True)  # the last run finishes whatever was planned
    warehouse = Warehouse(tmp_path / "wh.duckdb", lake)
    with warehouse.writer() as con:
        assert wh.full_check(con, lake, "events").ok
        assert con.execute("SELECT count(*) FROM load_batches WHERE state = 'planned'"
                           ).fetchall() == [(0,)]
    assert table_rows(warehouse) == table_rows(
        rebuild_all(tmp_path, lake.root, "rebuilt", SourceConfig("events")))


def _commit_rows(lake, rows: pa.Table, source="events") -> Commit:
    """Commit landing rows as they are (bypassing the reader's validation at the edge)."""
    log = CommitLog(lake, source)
    last = log.latest()
    seq = last.window_seq + 1 if last else 1
    writer = LandingWriter(lake, source, seq)
    batch = parse_batch(b"", seq, 0)
    batch.rows = rows
    writer.add(batch)
    files, dead = writer.finish()
    commit = Commit(source=source, window_seq=seq, resume_offset=rows["rtds_offset"][-1].as_py(),
                    previous_offset=last.resume_offset if last else None, first_offset=None,
                    files=files, dead_letter_files=dead, events=rows.num_rows, dead_letters=0,
                    offset_updates=0, keepalives=0, reconnects=0, bytes_read=0,
                    max_processed=None, committed_at=time.time(), stop_reason="test")
    log.write(commit)
    return commit


def test_rows_and_files_that_break_the_contract_are_quarantined_not_blocking(tmp_path):
    lake = open_lake(str(tmp_path / "lake"))
    commit_window(lake, "events", [event("a", "OPEN", f"{D1}T10:00:00.000Z", 1)])
    good = parse_batch(b"".join(
        __import__("orjson").dumps(e) + b"\n" for e in [
            event("b", "OPEN", f"{D1}T11:00:00.000Z", 2), event("c", "OPEN", f"{D1}T12:00:00.000Z", 3),
            event("d", "OPEN", f"{D1}T13:00:00.000Z", 4)]), 2, 0).rows
    # A row without type and one whose offset is not RTDS's, committed as they are.
    types = pa.array(["OPEN", None, "OPEN"])
    offsets = pa.array(["1000000000002", "1000000000003", "-5"])
    bad = good.set_column(good.schema.get_field_index("type"), "type", types) \
              .set_column(good.schema.get_field_index("rtds_offset"), "rtds_offset", offsets)
    _commit_rows(lake, bad)
    # A committed file truncated on disk (a disk fault): DuckDB cannot read it at all.
    broken = commit_window(lake, "events", [event("e", "OPEN", f"{D1}T14:00:00.000Z", 5)])
    Path(lake.path(broken.files[0].path)).write_bytes(b"PAR1 not really")
    commit_window(lake, "events", [event("f", "OPEN", f"{D1}T15:00:00.000Z", 6)])
    warehouse = Warehouse(tmp_path / "wh.duckdb", lake)
    with warehouse.writer() as con:
        wh.sync_manifest(con, lake, [SourceConfig("events")])
        wh.load_pending(con, lake, "events")
        n, examples = wh.quarantined(con, "events")
        reasons = sorted(r[0] for r in con.execute(
            "SELECT reason FROM events_quarantine").fetchall())
        # A backfill of the day is not blocked either.
        wh.rebuild_days(con, lake, "events", [D1])
    assert n == 3 and examples
    assert reasons[0] == "no type" and reasons[1] == "offset is not a plain digit string"
    assert reasons[2].startswith("unreadable file")
    assert [r[0] for r in table_rows(warehouse)] == ["a", "b", "f"]


def test_a_landing_compaction_waits_for_the_windows_it_replaces_to_be_loaded(tmp_path):
    """Windows 1–2 are loaded, 3–6 committed but not loaded, then the landing day is compacted
    (its small files merged, superseded by a compaction record): the load still reads windows
    3–6 from their own files, and applies the compaction only after them."""
    import datetime as dt

    from rtds_pipeline.lake.compaction import compact_source

    lake = open_lake(str(tmp_path / "lake"))
    source = SourceConfig("events")
    for w in range(6):
        commit_window(lake, "events", [event(f"e{w}-{j}", "OPEN", f"{D1}T1{j}:00:00.000Z",
                                             w * 10 + j) for j in range(3)]
                      + [event("dup", "OPEN", f"{D1}T09:00:00.000Z", w * 10 + 5)])
        if w == 1:
            warehouse = Warehouse(tmp_path / "wh.duckdb", lake)
            with warehouse.writer() as con:
                wh.load_all(con, lake, [source], "events")
    [done] = compact_source(lake, "events", today=dt.date(2026, 11, 30), max_files=2,
                            min_file_age_s=0)
    assert done.files_before == 6 and done.files_after <= 2
    with warehouse.writer() as con:
        wh.load_all(con, lake, [source], "events")
        assert wh.full_check(con, lake, "events").ok
        live = {p for (p,) in con.execute("SELECT path FROM landing_files WHERE day = ?",
                                          [D1]).fetchall()}
    assert len(live) == done.files_after  # the manifest follows the compaction
    got = table_rows(warehouse)
    assert len(got) == 6 * 3 + 1 and dict((r[0], r[6]) for r in got)["dup"] == 6
    assert got == table_rows(rebuild_all(tmp_path, lake.root, "rebuilt", source))


def test_a_load_whose_blocking_check_fails_writes_nothing_and_is_retried(tmp_path, monkeypatch):
    """A batch whose check fails (simulated: a load that would lose an id) appends nothing to
    the Delta table, publishes nothing, and blocks the loads after it: every load retries it
    first. Once it passes, its rows are there exactly once."""
    lake = open_lake(str(tmp_path / "lake"))
    warehouse = Warehouse(tmp_path / "wh.duckdb", lake)
    commit_window(lake, "events", [event("a", "OPEN", "2026-11-20T10:00:00Z", 1)])
    with warehouse.writer() as con:
        wh.sync_manifest(con, lake, SOURCES)
        wh.load_pending(con, lake, "events")
    files = DeltaEvents(lake, "events").files()
    published = warehouse.path.read_bytes()
    commit_window(lake, "events", [event("b", "OPEN", "2026-11-20T11:00:00Z", 2)])
    real = wh._check_load
    monkeypatch.setattr(wh, "_check_load", lambda *a: dataclasses.replace(real(*a), missing=1))
    for _ in range(2):
        with pytest.raises(wh.LoadCheckFailed, match="1 would not be kept.*Nothing was appended"):
            with warehouse.writer() as con:
                wh.sync_manifest(con, lake, SOURCES)
                wh.load_pending(con, lake, "events")
        assert DeltaEvents(lake, "events").files() == files
        assert warehouse.path.read_bytes() == published
    monkeypatch.setattr(wh, "_check_load", real)
    with warehouse.writer() as con:
        wh.sync_manifest(con, lake, SOURCES)
        assert wh.load_pending(con, lake, "events").check.ok
    with warehouse.reader() as con:
        assert sorted(con.execute("SELECT id FROM events").fetchall()) == [("a",), ("b",)]


def test_the_lakes_tables_are_written_in_zstd_like_the_landing_files(tmp_path):
    import pyarrow.parquet as pq

    lake = open_lake(str(tmp_path / "lake"))
    warehouse = Warehouse(tmp_path / "wh.duckdb", lake)
    commit_window(lake, "events", [event("a", "OPEN", "2026-11-20T10:00:00Z", 1),
                                   event("b", "OPEN", "2026-11-21T10:00:00Z", 2)])
    with warehouse.writer() as con:
        wh.sync_manifest(con, lake, SOURCES)
        wh.load_pending(con, lake, "events")
        wh.rebuild_days(con, lake, "events", ["2026-11-21"])  # the other write path
    files = DeltaEvents(lake, "events").files()
    assert len(files) == 2
    for f in files:
        meta = pq.ParquetFile(f.removeprefix("file://")).metadata
        codecs = {meta.row_group(0).column(i).compression for i in range(meta.num_columns)}
        assert codecs == {"ZSTD"}, f
