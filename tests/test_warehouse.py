"""`events`: hand-made landing windows whose right answers are known, loaded window by window
(the incremental path) and rebuilt by day (backfills); both must give the same rows."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import pytest
from landing import commit_window, event

from rtds_pipeline.lake.storage import open_lake
from rtds_pipeline.settings import SourceConfig
from rtds_pipeline.warehouse import events as wh
from rtds_pipeline.warehouse.delta import DeltaEvents
from rtds_pipeline.warehouse.store import Warehouse

SRC = SourceConfig("events")
D1, D2, D3 = "2026-11-20", "2026-11-21", "2026-11-22"
WAYS = ("load", "forward", "backward", "twice", "compacted")


@pytest.fixture
def lake(tmp_path):
    return open_lake(str(tmp_path / "lake"))


def load(tmp_path, lake, sources=(SRC,), name="wh.duckdb", fold_in=True):
    """The incremental path: every committed window not loaded yet, then (`fold_in`) what the
    maintenance job adds, the days behind the horizon that windows brought rows of."""
    warehouse = Warehouse(tmp_path / name, lake)
    with warehouse.writer() as con:
        wh.sync_manifest(con, lake, sources)
        wh.load_pending(con, lake, "events")
        if fold_in:
            wh.fold_in_cold(con, lake, "events")
    return warehouse


def build(tmp_path, lake, days, name="wh.duckdb", sources=(SRC,)):
    """The backfill path: rebuild `days` one at a time, in the order given."""
    warehouse = Warehouse(tmp_path / name, lake)
    with warehouse.writer() as con:
        wh.sync_manifest(con, lake, sources)
        for d in days:
            wh.rebuild_days(con, lake, "events", [d])
    return warehouse


def compact(warehouse, days):
    with warehouse.writer() as con:
        wh.compact_days(con, warehouse.lake, "events", days)
    return warehouse


def rows(warehouse, day=None):
    con = warehouse.reader()
    where = f"WHERE occurred_date = DATE '{day}'" if day else ""
    # No ORDER BY: the physical order of a compacted day is part of what is tested.
    return con.execute(f"SELECT id, rtds_offset, copies, occurred_date::VARCHAR FROM events {where}").fetchall()


def fork(lake, tmp_path, name):
    """A copy of the lake's landing zone, for a warehouse of its own (tables live in the lake)."""
    import shutil
    shutil.copytree(lake.root, tmp_path / name, ignore=shutil.ignore_patterns("tables"))
    return open_lake(str(tmp_path / name))


def every_way(tmp_path, lake, days, sources=(SRC,)):
    """The same landing built window by window, by rebuild in both day orders, twice, and
    compacted: each warehouse's sorted rows, which must all be equal."""
    out = {"load": load(tmp_path, fork(lake, tmp_path, "l1"), sources, "load.duckdb"),
           "forward": build(tmp_path, fork(lake, tmp_path, "l2"), days, "f.duckdb", sources),
           "backward": build(tmp_path, fork(lake, tmp_path, "l3"), days[::-1], "b.duckdb", sources),
           "twice": build(tmp_path, fork(lake, tmp_path, "l4"), days * 2, "t.duckdb", sources)}
    out["compacted"] = compact(load(tmp_path, fork(lake, tmp_path, "l5"), sources, "c.duckdb"), days)
    return {k: sorted(rows(w)) for k, w in out.items()}


def test_duplicates_inside_and_across_windows_keep_the_first_copy(tmp_path, lake):
    commit_window(lake, "events", [
        event("a", "OPEN", f"{D1}T10:00:00.000Z", 1),
        event("a", "OPEN", f"{D1}T10:00:00.000Z", 2, processed=f"{D1}T10:05:00.000Z"),
        event("b", "SEND", f"{D1}T09:00:00.000Z", 3)])
    w = load(tmp_path, lake)
    commit_window(lake, "events", [
        event("a", "OPEN", f"{D1}T10:00:00.000Z", 7, processed=f"{D2}T01:00:00.000Z"),
        event("c", "CUSTOM", f"{D1}T11:00:00.000Z", 8)])
    w = load(tmp_path, lake)  # the second window alone: "a" is a late copy
    want = [("a", "1000000000001", 3, D1), ("b", "1000000000003", 1, D1),
            ("c", "1000000000008", 1, D1)]
    assert sorted(rows(w, D1)) == want
    # Ordered by occurred once compacted: b (09:00), a (10:00), c (11:00); a counts 3 copies.
    assert rows(compact(w, [D1]), D1) == [want[1], want[0], want[2]]
    assert every_way(tmp_path, lake, [D1]) == dict.fromkeys(WAYS, want)


def test_equal_occurred_times_are_ordered_by_stream_position(tmp_path, lake):
    t = f"{D1}T12:00:00.000Z"
    commit_window(lake, "events", [event("z", "OPEN", t, 30), event("y", "OPEN", t, 4),
                                   event("x", "OPEN", t, 100)])
    assert [r[0] for r in rows(load(tmp_path, lake), D1)] == ["y", "z", "x"]
    assert [r[0] for r in rows(build(tmp_path, fork(lake, tmp_path, "b"), [D1], "b.duckdb"),
                               D1)] == ["y", "z", "x"]


def test_the_same_offset_landed_by_two_sources_is_kept_once(tmp_path, lake):
    """Two sources reading one stream land the same copy (same id and offset) twice: `events`
    keeps one, the first source by name, and counts both copies — whichever loads first."""
    t = f"{D1}T12:00:00.000Z"
    for source in ("mirror", "events"):  # the later name commits (and loads) first
        commit_window(lake, source, [event("a", "OPEN", t, 5), event(f"only-{source}", "OPEN", t, 6)])
    sources = (SourceConfig("mirror"), SRC)
    want = [("a", "events", 2), ("only-events", "events", 1), ("only-mirror", "mirror", 1)]
    for name, w in (("load", load(tmp_path, lake, sources)),
                    ("rebuild", build(tmp_path, fork(lake, tmp_path, "b"), [D1], "b.duckdb", sources))):
        got = w.reader().execute("SELECT id, source, copies FROM events ORDER BY id").fetchall()
        assert got == want, name


def test_late_and_future_events_go_to_their_occurred_day(tmp_path, lake):
    commit_window(lake, "events", [
        # 80 days late: occurred long before processed.
        event("late", "CUSTOM", "2026-09-01T08:00:00.000Z", 1, processed=f"{D2}T08:00:00.000Z"),
        # Device clock a few minutes ahead: occurred after processed, across midnight.
        event("future", "OPEN", f"{D3}T00:02:00.000Z", 2, processed=f"{D2}T23:59:00.000Z"),
        # Clock far ahead: Airship clamps occurred to processed.
        event("clamped", "OPEN", f"{D2}T12:00:00.000Z", 3, processed=f"{D2}T12:00:00.000Z")])
    w = load(tmp_path, lake, fold_in=False)
    # 80 days is behind the horizon (72 h): the window leaves that day to the maintenance job.
    assert rows(w, "2026-09-01") == []
    with w.writer() as con:
        assert wh.cold_days(con, "events") == ["2026-09-01"]
        folded = wh.fold_in_cold(con, lake, "events")
        assert (folded.rebuilt, folded.rows) == (["2026-09-01"], 1)
        assert wh.cold_days(con, "events") == []
        assert wh.full_check(con, lake, "events").ok
    assert rows(w, "2026-09-01") == [("late", "1000000000001", 1, "2026-09-01")]
    assert rows(w, D2) == [("clamped", "1000000000003", 1, D2)]
    assert rows(w, D3) == [("future", "1000000000002", 1, D3)]
    ways = every_way(tmp_path, lake, ["2026-09-01", D2, D3])
    assert ways == dict.fromkeys(WAYS, sorted(rows(w)))


def test_copies_are_deduplicated_within_their_occurred_day_the_same_way_on_every_path(
        tmp_path, lake):
    """An id's copies carry its `occurred`, so they meet in its day, and that is where they are
    deduplicated (a window probes only the keys of its days). Copies whose `occurred` fall on
    different days — the corner README's "Exact deduplication" names: a future-clamped event
    whose copy was clamped on the other side of midnight — are kept once in each day, the same
    way whichever path built the days and in whatever order."""
    commit_window(lake, "events", [event("m", "OPEN", f"{D1}T23:59:59.000Z", 5),
                                   event("n", "OPEN", f"{D1}T11:00:00.000Z", 6)])
    commit_window(lake, "events", [event("m", "OPEN", f"{D2}T00:00:01.000Z", 9),
                                   event("m", "OPEN", f"{D2}T00:00:01.000Z", 12),
                                   event("o", "OPEN", f"{D2}T11:00:00.000Z", 10)])
    want = [("m", "1000000000005", 1, D1), ("m", "1000000000009", 2, D2),
            ("n", "1000000000006", 1, D1), ("o", "1000000000010", 1, D2)]
    assert every_way(tmp_path, lake, [D1, D2]) == dict.fromkeys(WAYS, want)


def test_a_day_whose_keys_were_dropped_stays_cold_when_the_horizon_grows(tmp_path, lake):
    """The key store drops a day once it falls behind the horizon; a longer RTDS_HOT_HOURS set
    later must not treat that day as hot again (its keys are gone: a late copy would be kept
    twice). Its rows wait for the fold-in, which rebuilds the whole day from landing."""
    short = Warehouse(tmp_path / "wh.duckdb", lake, hot_hours=24)
    for id_, day, offset in (("a", D1, 1), ("b", D3, 2)):  # a load each: D1 keyed, then dropped
        commit_window(lake, "events", [event(id_, "OPEN", f"{day}T10:00:00.000Z", offset,
                                             processed=f"{day}T10:00:00.000Z")])
        with short.writer() as con:
            wh.sync_manifest(con, lake, [SRC])
            wh.load_pending(con, lake, "events")
            assert wh.key_store(con, "events").days() == [dt.date.fromisoformat(day)]
    commit_window(lake, "events", [event("a", "OPEN", f"{D1}T10:00:00.000Z", 3,
                                         processed=f"{D3}T11:00:00.000Z")])  # a late copy
    long = Warehouse(tmp_path / "wh.duckdb", lake, hot_hours=2160)
    with long.writer() as con:
        wh.sync_manifest(con, lake, [SRC])
        assert wh.load_pending(con, lake, "events").deferred == 1
        assert wh.cold_days(con, "events") == [D1]
        wh.fold_in_cold(con, lake, "events")
        assert wh.full_check(con, lake, "events").ok
    assert sorted(rows(long)) == [("a", "1000000000001", 2, D1), ("b", "1000000000002", 1, D3)]


def test_rebuilding_a_day_is_idempotent_and_equals_the_loads(tmp_path, lake):
    commit_window(lake, "events", [event("m", "OPEN", f"{D1}T10:00:00.000Z", 5),
                                   event("p", "OPEN", f"{D3}T10:00:00.000Z", 6)])
    w = load(tmp_path, lake)
    commit_window(lake, "events", [event("m", "OPEN", f"{D2}T10:00:00.000Z", 9),
                                   event("p", "OPEN", f"{D3}T10:00:00.000Z", 10),
                                   event("o", "OPEN", f"{D2}T11:00:00.000Z", 11)])
    loaded = sorted(rows(load(tmp_path, lake)))
    assert loaded == [("m", "1000000000005", 1, D1), ("m", "1000000000009", 1, D2),
                      ("o", "1000000000011", 1, D2), ("p", "1000000000006", 2, D3)]
    with w.writer() as con:
        result = wh.rebuild_days(con, lake, "events", [D1, D2, D3], batch_bytes=1)
        assert (result.landed_rows, result.rows, result.copies_dropped) == (5, 4, 1)
        wh.rebuild_days(con, lake, "events", [D2])
        assert wh.full_check(con, lake, "events").ok
    assert sorted(rows(w)) == loaded
    # The rebuild replaced the days' files, it did not add to them.
    assert DeltaEvents(lake, "events").file_counts() == {D1: 1, D2: 1, D3: 1}


def test_dead_letters_count_against_the_days_their_window_landed(tmp_path, lake):
    commit_window(lake, "events", [event("a", "OPEN", f"{D1}T10:00:00.000Z", 1)],
                  garbage=b'{"id": "x", "type": "OPEN", "offset": \x01 broken\n')
    commit_window(lake, "events", [event("b", "OPEN", f"{D2}T10:00:00.000Z", 2)])
    w = load(tmp_path, lake)
    with w.writer() as con:
        assert wh.dead_letters_near(con, "events", [D1]) == 1
        assert wh.dead_letters_near(con, "events", [D2]) == 0
        assert wh.full_check(con, lake, "events").ok


def test_uncommitted_files_are_invisible(tmp_path, lake):
    commit_window(lake, "events", [event("a", "OPEN", f"{D1}T10:00:00.000Z", 1)])
    # A crashed window: its file is written but no commit lists it.
    from rtds_pipeline.lake.batch import parse_batch
    from rtds_pipeline.lake.writer import LandingWriter
    orphan = LandingWriter(lake, "events", 2)
    orphan.add(parse_batch(b'{"id":"ghost","type":"OPEN","occurred":"2026-11-20T01:00:00Z",'
                           b'"processed":"2026-11-20T01:00:00Z","offset":"1000000000002"}\n', 2, 0))
    orphan.finish()
    assert [r[0] for r in rows(load(tmp_path, lake), D1)] == ["a"]


def test_typed_columns_come_from_the_envelope_and_body(tmp_path, lake):
    commit_window(lake, "events", [event(
        "k", "CUSTOM", f"{D1}T10:00:00.000Z", 1,
        device={"channel": "ch", "device_type": "IOS",
                "attributes": {"app_version": "5.1", "locale_country_code": "DE"}},
        user={"named_user_id": "u1", "contact_id": "c1"},
        body={"name": "purchase", "value": 12.5, "session_id": "s1",
              "triggering_push": {"push_id": "p1", "group_id": "g1"},
              "last_delivered": {"push_id": "p0"}, "brand_new_field": [1, 2]})])
    con = load(tmp_path, lake).reader()
    got = con.execute("SELECT channel, device_type, named_user_id, contact_id, custom_event_name, "
                      "custom_event_value, session_id, triggering_push_id, triggering_group_id, "
                      "last_delivered_push_id, app_version, country, "
                      "raw->'$.body.brand_new_field' FROM events").fetchall()
    assert got == [("ch", "IOS", "u1", "c1", "purchase", 12.5, "s1", "p1", "g1", "p0", "5.1", "DE",
                    "[1,2]")]


def test_readers_are_never_locked_out_by_the_writer(tmp_path, lake):
    commit_window(lake, "events", [event("a", "OPEN", f"{D1}T10:00:00.000Z", 1)])
    w = load(tmp_path, lake)
    reader = w.reader()  # an analyst holds the published snapshot open …
    commit_window(lake, "events", [event("b", "OPEN", f"{D1}T11:00:00.000Z", 2)])
    with w.writer() as con:  # … while the pipeline loads, and compacts the day
        wh.sync_manifest(con, lake, [SRC])
        wh.load_pending(con, lake, "events")
        wh.compact_days(con, lake, "events", [D1])
    assert reader.execute("SELECT count(*) FROM events").fetchall() == [(1,)]  # old snapshot
    # A new reader (another process, as an analyst's `duckdb -readonly` is) sees the new one.
    out = subprocess.run([sys.executable, "-c", "import duckdb, sys; print(duckdb.connect("
                          "sys.argv[1], read_only=True).execute('SELECT count(*) FROM events')"
                          ".fetchall()[0][0])", str(w.path)],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "2"


HOLD = """import duckdb, sys
con = duckdb.connect(sys.argv[1], read_only=True)
for _ in range(2):
    print(con.execute('SELECT count(*) FROM events').fetchall()[0][0], flush=True)
    sys.stdin.readline()
"""


def test_snapshots_take_turns_and_one_a_reader_holds_is_left_alone(tmp_path, lake):
    """Each publish brings the snapshot before the current one up to date in place (two files
    take turns, nothing is copied), except one a reader still holds: an analyst's
    `duckdb -readonly` in another process keeps its snapshot across later publishes."""
    warehouse = Warehouse(tmp_path / "wh.duckdb", lake)

    def publish_window(i: int) -> int:
        commit_window(lake, "events", [event(f"e{i}", "OPEN", f"{D1}T10:{i:02d}:00.000Z", i)])
        with warehouse.writer() as con:
            wh.sync_manifest(con, lake, [SRC])
            wh.load_pending(con, lake, "events")
        return os.stat(warehouse.path).st_ino

    inodes = [publish_window(i) for i in range(1, 5)]
    assert inodes[0] != inodes[1] and inodes[2:] == inodes[:2]
    analyst = subprocess.Popen([sys.executable, "-c", HOLD, str(warehouse.path)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert analyst.stdout.readline().strip() == "4"
        later = [publish_window(i) for i in range(5, 8)]
        assert inodes[3] not in later  # held: a copy took its turn
        analyst.stdin.write("\n")
        analyst.stdin.flush()
        assert analyst.stdout.readline().strip() == "4"
    finally:
        analyst.stdin.close()
        analyst.stdout.close()
        analyst.wait(timeout=60)
    with warehouse.reader() as con:
        assert con.execute("SELECT count(*) FROM events").fetchall() == [(7,)]


def test_events_build_from_a_lake_on_a_real_s3_server(fresh_server, s3_server, tmp_path):
    import random

    from rtds_pipeline.extract.ingest import ingest_window
    from rtds_pipeline.extract.reader import WindowLimits

    srv = fresh_server(backlog=3000)
    lake = open_lake("s3://lake/wh-" + str(random.randrange(10**9)), s3_server)
    source = SourceConfig("events", base_url=srv.url)
    ingest_window(source, lake, WindowLimits(max_seconds=30, idle_timeout=10))
    warehouse = Warehouse(tmp_path / "wh.duckdb", lake)
    with warehouse.writer() as con:
        wh.sync_manifest(con, lake, [source])
        assert all(p.startswith("s3://") for p, in con.execute("SELECT path FROM landing_files").fetchall())
        wh.load_pending(con, lake, "events")
        days = wh.landed_days(con, "events")
        wh.rebuild_days(con, lake, "events", days[:2])
        wh.compact_days(con, lake, "events", days[2:4])
        assert wh.full_check(con, lake, "events").ok
    assert all(f.startswith("s3://") for f in DeltaEvents(lake, "events").files())
    want = {r["id"] for r in srv.ground_truth() if r["type"] != "COMPLIANCE"}
    got = [r[0] for r in warehouse.reader().execute("SELECT id FROM events").fetchall()]
    assert len(got) == len(set(got)) and set(got) == want


def test_growing_bookkeeping_is_appended_to_the_snapshot_not_copied(tmp_path, lake, monkeypatch):
    """`landing_windows` and `load_log` gain rows with every window: a publish appends what is
    new to the snapshot it brings up to date, and rewrites the windows that snapshot showed not
    loaded yet. Published tables equal the writer's after every publish, each way it happens."""
    import duckdb

    from rtds_pipeline.warehouse import store

    appended = []
    real = store._append_since

    def spy(con, table, base):
        appended.append((table, real(con, table, base)))
        return appended[-1][1]

    monkeypatch.setattr(store, "_append_since", spy)
    warehouse = Warehouse(tmp_path / "wh.duckdb", lake)

    def published_equals_writer() -> None:
        query = ("SELECT * FROM landing_windows ORDER BY source, window_seq",
                 "SELECT * FROM load_log ORDER BY table_name, batch, day, mode")
        with duckdb.connect(str(warehouse.writer_path), read_only=True) as writer, \
                warehouse.reader() as reader:
            for q in query:
                assert reader.execute(q).fetchall() == writer.execute(q).fetchall()

    for i in range(1, 7):
        commit_window(lake, "events", [event(f"e{i}", "OPEN", f"{D1}T10:{i:02d}:00.000Z", i)])
        with warehouse.writer() as con:  # synced now, loaded only every other time
            wh.sync_manifest(con, lake, [SRC])
            if i % 2 == 0:
                wh.load_pending(con, lake, "events")
        published_equals_writer()
    with warehouse.reader() as con:
        assert con.execute("SELECT count(*) FROM landing_windows WHERE load_batch IS NULL"
                           ).fetchall() == [(0,)]
        assert con.execute("SELECT count(*) FROM events").fetchall() == [(6,)]
    # Every snapshot brought up to date after the first publish had marks: appended to, each.
    assert appended and all(ok for _, ok in appended), appended
    assert {t for t, _ in appended} == {"landing_windows", "load_log"}
