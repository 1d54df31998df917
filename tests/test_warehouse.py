"""`events` built per occurred day from hand-made landing windows whose right answers are known."""

from __future__ import annotations

import subprocess
import sys

import pytest
from landing import commit_window, event

from rtds_pipeline.lake.storage import open_lake
from rtds_pipeline.settings import SourceConfig
from rtds_pipeline.warehouse import events as wh
from rtds_pipeline.warehouse.store import Warehouse

SRC = SourceConfig("events")
D1, D2, D3 = "2026-11-20", "2026-11-21", "2026-11-22"


@pytest.fixture
def lake(tmp_path):
    return open_lake(str(tmp_path / "lake"))


def build(tmp_path, lake, days, name="wh.duckdb"):
    warehouse = Warehouse(tmp_path / name)
    with warehouse.writer(lake) as con:
        wh.sync_manifest(con, lake, [SRC])
        for d in days:  # one day at a time, in the order given
            wh.build_day(con, "events", d)
    return warehouse


def rows(warehouse, day=None):
    con = warehouse.reader()
    where = f"WHERE occurred_date = DATE '{day}'" if day else ""
    # No ORDER BY: the physical order of a day is part of what is tested.
    return con.execute(f"SELECT id, rtds_offset, copies, occurred_date::VARCHAR FROM events {where}").fetchall()


def test_duplicates_inside_and_across_windows_keep_the_first_copy(tmp_path, lake):
    commit_window(lake, "events", [
        event("a", "OPEN", f"{D1}T10:00:00.000Z", 1),
        event("a", "OPEN", f"{D1}T10:00:00.000Z", 2, processed=f"{D1}T10:05:00.000Z"),
        event("b", "SEND", f"{D1}T09:00:00.000Z", 3)])
    commit_window(lake, "events", [
        event("a", "OPEN", f"{D1}T10:00:00.000Z", 7, processed=f"{D2}T01:00:00.000Z"),
        event("c", "CUSTOM", f"{D1}T11:00:00.000Z", 8)])
    got = rows(build(tmp_path, lake, [D1]), D1)
    # Ordered by occurred: b (09:00), a (10:00), c (11:00); a keeps offset 1 and counts 3 copies.
    assert got == [("b", "1000000000003", 1, D1), ("a", "1000000000001", 3, D1),
                   ("c", "1000000000008", 1, D1)]


def test_equal_occurred_times_are_ordered_by_stream_position(tmp_path, lake):
    t = f"{D1}T12:00:00.000Z"
    commit_window(lake, "events", [event("z", "OPEN", t, 30), event("y", "OPEN", t, 4),
                                   event("x", "OPEN", t, 100)])
    assert [r[0] for r in rows(build(tmp_path, lake, [D1]), D1)] == ["y", "z", "x"]


def test_the_same_offset_landed_by_two_sources_is_kept_once(tmp_path, lake):
    """Two sources reading one stream land the same copy (same id and offset) twice: `events`
    keeps one, the first source by name, and counts both copies."""
    t = f"{D1}T12:00:00.000Z"
    for source in ("events", "mirror"):
        commit_window(lake, source, [event("a", "OPEN", t, 5), event(f"only-{source}", "OPEN", t, 6)])
    warehouse = Warehouse(tmp_path / "wh.duckdb")
    with warehouse.writer(lake) as con:
        wh.sync_manifest(con, lake, [SRC, SourceConfig("mirror")])
        wh.build_day(con, "events", D1)
    got = warehouse.reader().execute(
        "SELECT id, source, copies FROM events ORDER BY id").fetchall()
    assert got == [("a", "events", 2), ("only-events", "events", 1), ("only-mirror", "mirror", 1)]


def test_late_and_future_events_go_to_their_occurred_day(tmp_path, lake):
    commit_window(lake, "events", [
        # 80 days late: occurred long before processed.
        event("late", "CUSTOM", "2026-09-01T08:00:00.000Z", 1, processed=f"{D2}T08:00:00.000Z"),
        # Device clock a few minutes ahead: occurred after processed, across midnight.
        event("future", "OPEN", f"{D3}T00:02:00.000Z", 2, processed=f"{D2}T23:59:00.000Z"),
        # Clock far ahead: Airship clamps occurred to processed.
        event("clamped", "OPEN", f"{D2}T12:00:00.000Z", 3, processed=f"{D2}T12:00:00.000Z")])
    w = build(tmp_path, lake, ["2026-09-01", D2, D3])
    assert rows(w, "2026-09-01") == [("late", "1000000000001", 1, "2026-09-01")]
    assert rows(w, D2) == [("clamped", "1000000000003", 1, D2)]
    assert rows(w, D3) == [("future", "1000000000002", 1, D3)]


def test_a_copy_in_another_day_is_kept_once_whatever_the_build_order(tmp_path, lake):
    # Copies of "m" with different occurred dates (a re-sent event with a corrected clock):
    # the first delivered (offset 5, day D1) is the one kept, in whichever order days build.
    commit_window(lake, "events", [event("m", "OPEN", f"{D1}T10:00:00.000Z", 5),
                                   event("n", "OPEN", f"{D1}T11:00:00.000Z", 6)])
    commit_window(lake, "events", [event("m", "OPEN", f"{D2}T10:00:00.000Z", 9),
                                   event("o", "OPEN", f"{D2}T11:00:00.000Z", 10)])
    forward = build(tmp_path, lake, [D1, D2], "forward.duckdb")
    backward = build(tmp_path, lake, [D2, D1], "backward.duckdb")
    twice = build(tmp_path, lake, [D2, D1, D2, D1, D2], "twice.duckdb")
    for w in (forward, backward, twice):
        assert sorted(rows(w)) == [("m", "1000000000005", 1, D1), ("n", "1000000000006", 1, D1),
                                   ("o", "1000000000010", 1, D2)]
    with Warehouse(tmp_path / "forward.duckdb").writer(lake, publish=False) as con:
        assert wh.reconcile_day(con, "events", D2).ok  # m counted as kept elsewhere
        assert wh.reconcile_day(con, "events", D2).kept_elsewhere == 1
        assert wh.duplicate_ids(con, "events", [D1, D2]) == []


def test_one_batch_equals_day_by_day(tmp_path, lake):
    commit_window(lake, "events", [event("m", "OPEN", f"{D1}T10:00:00.000Z", 5),
                                   event("p", "OPEN", f"{D3}T10:00:00.000Z", 6)])
    commit_window(lake, "events", [event("m", "OPEN", f"{D2}T10:00:00.000Z", 9),
                                   event("p", "OPEN", f"{D3}T10:00:00.000Z", 10),
                                   event("o", "OPEN", f"{D2}T11:00:00.000Z", 11)])
    day_by_day = build(tmp_path, lake, [D3, D2, D1], "days.duckdb")
    batched = Warehouse(tmp_path / "batch.duckdb")
    with batched.writer(lake) as con:
        wh.sync_manifest(con, lake, [SRC])
        builds = wh.build_days(con, "events", [D1, D2, D3], batch_bytes=1)  # one day per batch
        assert [(b.day, b.landed_rows, b.rows, b.copies_dropped) for b in builds] == [
            (D1, 1, 1, 0), (D2, 2, 1, 1), (D3, 2, 1, 1)]
        assert all(r.ok for r in wh.reconcile_days(con, "events", [D1, D2, D3]))
    whole = Warehouse(tmp_path / "whole.duckdb")
    with whole.writer(lake) as con:
        wh.sync_manifest(con, lake, [SRC])
        wh.build_days(con, "events", [D1, D2, D3])
    assert sorted(rows(day_by_day)) == sorted(rows(batched)) == sorted(rows(whole)) == [
        ("m", "1000000000005", 1, D1), ("o", "1000000000011", 1, D2), ("p", "1000000000006", 2, D3)]


def test_rebuilding_a_day_is_idempotent_and_sees_new_commits(tmp_path, lake):
    commit_window(lake, "events", [event("a", "OPEN", f"{D1}T10:00:00.000Z", 1)])
    w = build(tmp_path, lake, [D1, D1])
    assert rows(w, D1) == [("a", "1000000000001", 1, D1)]
    with w.writer(lake) as con:
        assert wh.current_days(con, "events", [D1]) == {D1}
    commit_window(lake, "events", [event("b", "OPEN", f"{D1}T09:00:00.000Z", 2)])
    with w.writer(lake) as con:
        wh.sync_manifest(con, lake, [SRC])
        assert wh.current_days(con, "events", [D1]) == set()  # a new commit touched it
    w = build(tmp_path, lake, [D1])
    with w.writer(lake) as con:
        assert wh.current_days(con, "events", [D1]) == {D1}
    assert [r[0] for r in rows(w, D1)] == ["b", "a"]


def test_dead_letters_count_against_the_days_their_window_landed(tmp_path, lake):
    commit_window(lake, "events", [event("a", "OPEN", f"{D1}T10:00:00.000Z", 1)],
                  garbage=b'{"id": "x", "type": "OPEN", "offset": \x01 broken\n')
    commit_window(lake, "events", [event("b", "OPEN", f"{D2}T10:00:00.000Z", 2)])
    w = build(tmp_path, lake, [D1, D2])
    with w.writer(lake) as con:
        assert wh.dead_letters_near(con, "events", [D1]) == 1
        assert wh.dead_letters_near(con, "events", [D2]) == 0
        assert all(r.ok for r in wh.reconcile_days(con, "events", [D1, D2]))


def test_uncommitted_files_are_invisible(tmp_path, lake):
    commit_window(lake, "events", [event("a", "OPEN", f"{D1}T10:00:00.000Z", 1)])
    # A crashed window: its file is written but no commit lists it.
    from rtds_pipeline.lake.batch import parse_batch
    from rtds_pipeline.lake.writer import LandingWriter
    orphan = LandingWriter(lake, "events", 2)
    orphan.add(parse_batch(b'{"id":"ghost","type":"OPEN","occurred":"2026-11-20T01:00:00Z",'
                           b'"processed":"2026-11-20T01:00:00Z","offset":"1000000000002"}\n', 2, 0))
    orphan.finish()
    assert [r[0] for r in rows(build(tmp_path, lake, [D1]), D1)] == ["a"]


def test_typed_columns_come_from_the_envelope_and_body(tmp_path, lake):
    commit_window(lake, "events", [event(
        "k", "CUSTOM", f"{D1}T10:00:00.000Z", 1,
        device={"channel": "ch", "device_type": "IOS",
                "attributes": {"app_version": "5.1", "locale_country_code": "DE"}},
        user={"named_user_id": "u1", "contact_id": "c1"},
        body={"name": "purchase", "value": 12.5, "session_id": "s1",
              "triggering_push": {"push_id": "p1", "group_id": "g1"},
              "last_delivered": {"push_id": "p0"}, "brand_new_field": [1, 2]})])
    con = build(tmp_path, lake, [D1]).reader()
    got = con.execute("SELECT channel, device_type, named_user_id, contact_id, custom_event_name, "
                      "custom_event_value, session_id, triggering_push_id, triggering_group_id, "
                      "last_delivered_push_id, app_version, country, "
                      "raw->'$.body.brand_new_field' FROM events").fetchall()
    assert got == [("ch", "IOS", "u1", "c1", "purchase", 12.5, "s1", "p1", "g1", "p0", "5.1", "DE",
                    "[1,2]")]


def test_readers_are_never_locked_out_by_the_writer(tmp_path, lake):
    commit_window(lake, "events", [event("a", "OPEN", f"{D1}T10:00:00.000Z", 1)])
    w = build(tmp_path, lake, [D1])
    reader = w.reader()  # an analyst holds the published snapshot open …
    commit_window(lake, "events", [event("b", "OPEN", f"{D1}T11:00:00.000Z", 2)])
    with w.writer(lake) as con:  # … while the pipeline writes
        wh.sync_manifest(con, lake, [SRC])
        wh.build_day(con, "events", D1)
    assert reader.execute("SELECT count(*) FROM events").fetchall() == [(1,)]  # old snapshot
    # A new reader (another process, as an analyst's `duckdb -readonly` is) sees the new one.
    out = subprocess.run([sys.executable, "-c", "import duckdb, sys; print(duckdb.connect("
                          "sys.argv[1], read_only=True).execute('SELECT count(*) FROM events')"
                          ".fetchall()[0][0])", str(w.path)],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "2"


def test_events_build_from_a_lake_on_a_real_s3_server(fresh_server, s3_server, tmp_path):
    import random

    from rtds_pipeline.ingest import ingest_window
    from rtds_pipeline.stream.reader import WindowLimits

    srv = fresh_server(backlog=3000)
    lake = open_lake("s3://lake/wh-" + str(random.randrange(10**9)), s3_server)
    source = SourceConfig("events", base_url=srv.url)
    ingest_window(source, lake, WindowLimits(max_seconds=30, idle_timeout=10))
    warehouse = Warehouse(tmp_path / "wh.duckdb")
    with warehouse.writer(lake) as con:
        wh.sync_manifest(con, lake, [source])
        days = [r[0] for r in con.execute("SELECT DISTINCT day FROM landing_files").fetchall()]
        assert all(p.startswith("s3://") for p, in con.execute("SELECT path FROM landing_files").fetchall())
        wh.build_days(con, "events", days)
        assert all(r.ok for r in wh.reconcile_days(con, "events", days))
    want = {r["id"] for r in srv.ground_truth() if r["type"] != "COMPLIANCE"}
    got = [r[0] for r in warehouse.reader().execute("SELECT id FROM events").fetchall()]
    assert len(got) == len(set(got)) and set(got) == want
