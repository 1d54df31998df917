"""Incremental refresh = full refresh, for every mart: test-server data with its quirks
(duplicates, late, future-clamped, out-of-order processed) loaded as many windows with a marts
refresh after each, late events that touch old sessions, pushes, channels and addresses, and a
backfill (rebuilt days) in between."""

from __future__ import annotations

import dataclasses

import pytest
from landing import SOURCES, commit_window, event

from rtds_pipeline.extract.ingest import ingest_window
from rtds_pipeline.extract.reader import WindowLimits
from rtds_pipeline.lake.storage import open_lake
from rtds_pipeline.testserver.app import ServerOptions, TestServer
from rtds_pipeline.testserver.log import Quirks
from rtds_pipeline.warehouse import events as wh
from rtds_pipeline.warehouse import marts, rowmap
from rtds_pipeline.warehouse.store import Warehouse


def snapshot(con, mart: marts.Mart) -> list[str]:
    """The mart's rows as sorted text (doubles rounded: sums may add in another order)."""
    cols = [(name, type_) for name, type_, *_ in con.execute(f"DESCRIBE {mart.name}").fetchall()]
    exprs = [f"round({n}, 9)" if t == "DOUBLE" else n for n, t in cols]
    rows = con.execute(f"SELECT ({', '.join(exprs)})::VARCHAR FROM {mart.name}").fetchall()
    return sorted(r[0] for r in rows)


def refresh_after_load(con, lake) -> list[marts.Refreshed]:
    wh.sync_manifest(con, lake, SOURCES)
    for kind in ("events", "compliance"):
        wh.load_pending(con, lake, kind)
        wh.fold_in_cold(con, lake, kind)  # the maintenance job's: days behind the horizon
    return marts.refresh(con)


def opened(session: str, offset: int) -> dict:
    """An OPEN of `session` by one iOS channel."""
    return event(f"open-{session}", "OPEN", "2026-11-20T10:00:00Z", offset,
                 body={"session_id": session}, device={"channel": "c1", "device_type": "IOS"})


def late_window(con, lake) -> None:
    """Events that reach back: a CLOSE of an old session, opens and a conversion of old pushes,
    an uninstall of a channel that got pushes, an earlier first event of that channel, an old
    consent change of a known address, an in-app resolution of an old message, a new email
    channel's first opt-in a day before the oldest send."""
    def pick(sql: str) -> tuple:
        row = con.execute(sql).fetchall()
        assert row, sql
        return row[0]

    session, s_channel, s_at = pick(
        "SELECT session_id, channel, min(occurred) FROM stg_events WHERE session_id IS NOT NULL "
        "AND type = 'OPEN' GROUP BY ALL ORDER BY 3 LIMIT 1")
    push, p_channel, p_at = pick(
        "SELECT push_id, channel, occurred FROM stg_events WHERE type = 'SEND' "
        "AND channel IS NOT NULL ORDER BY occurred, id LIMIT 1")
    address, a_type = pick("SELECT address, address_type FROM stg_events "
                           "WHERE stream = 'compliance' AND address IS NOT NULL ORDER BY id LIMIT 1")
    iam = pick("SELECT push_id FROM stg_events WHERE type = 'IN_APP_MESSAGE_DISPLAY' "
               "ORDER BY id LIMIT 1")[0]

    def ts(t, minutes: int) -> str:
        import datetime as dt
        return (t + dt.timedelta(minutes=minutes)).astimezone(dt.UTC).strftime(
            "%Y-%m-%dT%H:%M:%S.000Z")

    dev = {"channel": p_channel, "device_type": "IOS", "attributes": {"app_version": "1.0"}}
    trig = {"push_id": push, "time": ts(p_at, 0)}
    now = ts(p_at, 60 * 24 * 2)
    commit_window(lake, "events", [
        event("late-close", "CLOSE", ts(s_at, 30), 9_000_001, processed=now,
              device={"channel": s_channel, "device_type": "IOS"},
              body={"session_id": session}),
        event("late-open", "OPEN", ts(p_at, 5), 9_000_002, processed=now, device=dev,
              body={"session_id": "late-s", "triggering_push": trig, "last_delivered": trig}),
        event("late-buy", "CUSTOM", ts(p_at, 7), 9_000_003, processed=now, device=dev,
              body={"name": "purchase", "value": 3.5, "session_id": "late-s",
                    "triggering_push": trig}),
        event("late-gone", "UNINSTALL", ts(p_at, 60), 9_000_004, processed=now, device=dev,
              body={"decay": False}),
        event("late-first", "APP_INSTALL", ts(p_at, -60 * 24 * 3), 9_000_005, processed=now,
              device=dev),
        event("late-iam", "IN_APP_MESSAGE_RESOLUTION", ts(p_at, 3), 9_000_006, processed=now,
              device=dev, body={"push_id": iam, "type": "TIMED_OUT"}),
        event("late-opt-in", "FIRST_OPT_IN", ts(p_at, -60 * 24), 9_000_008, processed=now,
              device={"channel": "late-e", "device_type": "EMAIL",
                      "delivery_address": "late@example.com"}),
    ])
    commit_window(lake, "compliance", [
        event("late-consent", "COMPLIANCE", ts(p_at, -60 * 24), 9_000_007, processed=now,
              body={"event_type": "link_unsubscribe",
                    "identifiers": {"msisdn" if a_type == "sms" else "address": address},
                    "properties": {"commercial_opted_out": ts(p_at, -60 * 24)}}),
    ])


@pytest.fixture
def row_maps(monkeypatch):
    """Row maps kept at any size (warehouse/rowmap.py; by default only for big tables), and
    rebuilt often: the refreshes and publishes find their keys through them."""
    monkeypatch.setattr(rowmap, "MIN_ROWS", 0)
    monkeypatch.setattr(rowmap, "ROW_GROUP", 1)  # maps of tables smaller than a row group
    monkeypatch.setattr(rowmap, "MIN_TAIL", 200)
    monkeypatch.setattr(rowmap, "TAIL_SHARE", 2)


def maps_kept(con) -> set[tuple[str, str]]:
    return set(con.execute("SELECT DISTINCT db, tbl FROM row_maps").fetchall())


@pytest.mark.slow
def test_incremental_refresh_equals_full_refresh_for_every_mart(tmp_path, row_maps):
    quirks = Quirks(duplicate=0.05, late=0.05, future_skew=0.01, small_skew=0.01,
                    processed_jitter=0.2, unknown_type=0.001, unknown_field=0.01)
    lake = open_lake(str(tmp_path / "lake"))
    warehouse = Warehouse(tmp_path / "wh.duckdb", lake)
    modes: dict[str, set[str]] = {m.name: set() for m in marts.MARTS}
    with TestServer(ServerOptions(port=0, backlog=6000, seed=5, quirks=quirks)) as srv:
        sources = [dataclasses.replace(s, base_url=srv.url) for s in SOURCES]
        with warehouse.writer() as con:
            for window in range(12):
                for source in sources:
                    ingest_window(source, lake, WindowLimits(max_seconds=30, idle_timeout=10,
                                                             max_events=600))
                for r in refresh_after_load(con, lake):
                    modes[r.mart].add(r.mode)
                if window == 6:  # a backfill of the busiest day: the marts follow it too
                    day = con.execute("SELECT occurred_date::VARCHAR FROM stg_events "
                                      "GROUP BY 1 ORDER BY count(*) DESC LIMIT 1").fetchall()[0][0]
                    wh.rebuild_days(con, lake, "events", [day])
            late_window(con, lake)
            refresh_after_load(con, lake)
            incremental = {m.name: snapshot(con, m) for m in marts.MARTS}
            assert {("main", "sessions"), ("main", "stg_events")} <= maps_kept(con)
            # Every mart was first built in full, then refreshed incrementally.
            assert all(v == {"full", "incremental"} for v in modes.values()), modes
            marts.refresh(con, full=True)
            full = {m.name: snapshot(con, m) for m in marts.MARTS}
            stg = con.execute("SELECT count(*) FROM stg_events").fetchall()[0][0]
            kept = con.execute("SELECT (SELECT count(*) FROM events) + "
                               "(SELECT count(*) FROM compliance_events)").fetchall()[0][0]
    assert stg == kept
    for mart in marts.MARTS:
        assert full[mart.name], f"{mart.name} is empty: the test proves nothing for it"
        assert incremental[mart.name] == full[mart.name], mart.name


def test_staging_maintained_by_loads_equals_staging_from_the_tables(tmp_path):
    """stg_events (appended by loads, copies added by later loads, days rebuilt) holds exactly
    the staging of the events / compliance_events views."""
    quirks = Quirks(duplicate=0.1, late=0.02, future_skew=0, small_skew=0, processed_jitter=0.2,
                    unknown_type=0, unknown_field=0)
    lake = open_lake(str(tmp_path / "lake"))
    warehouse = Warehouse(tmp_path / "wh.duckdb", lake)
    with TestServer(ServerOptions(port=0, backlog=3000, seed=9, quirks=quirks)) as srv:
        sources = [dataclasses.replace(s, base_url=srv.url) for s in SOURCES]
        with warehouse.writer() as con:
            for _ in range(5):
                for source in sources:
                    ingest_window(source, lake, WindowLimits(max_seconds=30, idle_timeout=10,
                                                             max_events=500))
                refresh_after_load(con, lake)
            cols = "* EXCLUDE (changed)"
            kept = con.execute(f"SELECT {cols} FROM stg_events ORDER BY id, stream").fetchall()
            marts.refresh(con, full=True)  # recomputes the staging from the tables
            again = con.execute(f"SELECT {cols} FROM stg_events ORDER BY id, stream").fetchall()
            copies = con.execute("SELECT sum(copies) FROM stg_events").fetchall()[0][0]
    assert kept == again and len(kept) > 2000
    assert copies > len(kept)  # duplicates arrived in later windows: their copies were added


def test_published_marts_equal_the_writers_when_patched_across_sessions(tmp_path, row_maps):
    """Each session loads a window, refreshes the marts and publishes by patching the previous
    snapshot with the keys it touched; a session that does not publish in between forces the
    next one to copy the marts whole. Every published mart equals the writer's."""
    lake = open_lake(str(tmp_path / "lake"))
    warehouse = Warehouse(tmp_path / "wh.duckdb", lake)
    with TestServer(ServerOptions(port=0, backlog=3000, seed=3)) as srv:
        sources = [dataclasses.replace(s, base_url=srv.url) for s in SOURCES]
        for session in range(5):
            for source in sources:
                ingest_window(source, lake, WindowLimits(max_seconds=30, idle_timeout=10,
                                                         max_events=500))
            with warehouse.writer(publish=session != 2) as con:
                refresh_after_load(con, lake)
                written = {m.name: snapshot(con, m) for m in marts.MARTS}
                if session == 4:  # the spares were patched through their maps
                    assert ("publish", "sessions") in maps_kept(con)
            if session == 2:
                continue
            with warehouse.reader() as reader:
                published = {m.name: snapshot(reader, m) for m in marts.MARTS}
            assert published == written, session


def test_a_full_refresh_clears_the_patches_of_a_mart_whose_columns_changed(tmp_path):
    """A new version's mart has other columns, and the remedy is a full refresh: it supersedes
    every patch recorded for that mart, so the next incremental refresh records its rows in the
    new shape and publishes them (here an older shape is simulated by a column the patch table
    has and the mart has not)."""
    lake = open_lake(str(tmp_path / "lake"))
    warehouse = Warehouse(tmp_path / "wh.duckdb", lake)
    with TestServer(ServerOptions(port=0, backlog=2000, seed=5)) as srv:
        sources = [dataclasses.replace(s, base_url=srv.url) for s in SOURCES]

        def window() -> None:
            for source in sources:
                ingest_window(source, lake, WindowLimits(max_seconds=30, idle_timeout=10,
                                                         max_events=400))

        for session in range(3):
            window()
            with warehouse.writer() as con:
                refresh_after_load(con, lake)
                if session == 1:
                    con.execute("ALTER TABLE publish_rows_sessions ADD COLUMN older INTEGER")
                    marts.refresh(con, full=True)
                written = snapshot(con, marts.BY_NAME["sessions"])
            with warehouse.reader() as reader:
                assert snapshot(reader, marts.BY_NAME["sessions"]) == written, session


def test_scoped_checks_cover_the_keys_the_refresh_recomputed(tmp_path):
    """After an incremental refresh the checks cover the keys it recomputed, read from the rows
    it computed rather than found again in the mart. A faulty mart SQL is simulated by tampering
    with those rows (and the mart, as it would have written them): the scoped checks see what
    was recomputed, and not an older fault of a key the refresh did not touch."""
    lake = open_lake(str(tmp_path / "lake"))
    warehouse = Warehouse(tmp_path / "wh.duckdb", lake)
    sessions = marts.BY_NAME["sessions"]

    commit_window(lake, "events", [opened("old", 0)])
    with warehouse.writer() as con:
        assert {r.mode for r in refresh_after_load(con, lake)} == {"full"}
    commit_window(lake, "events", [opened("a", 1), opened("b", 2)])
    with warehouse.writer() as con:
        checked = {r.mart: r for r in refresh_after_load(con, lake)}
        assert (checked["sessions"].mode, checked["sessions"].keys) == (
            "incremental", 2)
        assert (checked["sessions"].violations, checked["sessions"].duplicates,
                checked["sessions"].total_rows) == (0, 0, 3)
        for table in ("rows_sessions", "sessions"):
            con.execute(f"UPDATE {table} SET duration_s = -1 WHERE session_id IN ('a', 'old')")
            con.execute(f"INSERT INTO {table} SELECT * FROM {table} WHERE session_id = 'b'")
        assert marts.violations(con, sessions, scoped=True)[0] == 1  # 'a'; 'old' is not in scope
        assert marts.grain_duplicates(con, sessions, scoped=True)[0] == 1
        assert marts.violations(con, sessions)[0] == 2  # the whole mart: 'a' and 'old'


@pytest.mark.slow
def test_two_pipeline_lives_over_a_restarted_test_server_equal_a_full_rebuild(tmp_path):
    """`make run`, stopped and started again: the test server restarts from its state dir, the
    pipeline from the lake and its writer's file. Every refresh of both lives passes its
    blocking checks (they raise otherwise), `events` holds each id the server ever sent once,
    and every mart equals a full rebuild."""
    state = tmp_path / "testserver"
    lake = open_lake(str(tmp_path / "lake"))
    warehouse = Warehouse(tmp_path / "wh.duckdb", lake)
    limits = WindowLimits(max_seconds=30, idle_timeout=10, max_events=3000)
    for _life in range(2):
        with TestServer(ServerOptions(port=0, backlog=8000, seed=7, state_dir=state)) as srv:
            sources = [dataclasses.replace(s, base_url=srv.url) for s in SOURCES]
            with warehouse.writer() as con:
                for _ in range(4):
                    srv.generate(500)  # live traffic between the windows
                    for source in sources:
                        ingest_window(source, lake, limits)
                    refresh_after_load(con, lake)
            truth = srv.ground_truth()
    with warehouse.writer() as con:
        assert {r.mode for r in refresh_after_load(con, lake)} == {"incremental"}
        for kind, table in wh.TABLES.items():
            # Each id once, at the offset the server first sent it (the same in both lives).
            want = {(r["id"], r["offset"]) for r in truth if not r["duplicate"]
                    and (r["type"] == "COMPLIANCE") == (kind == "compliance")}
            got = con.execute(f"SELECT id, rtds_offset FROM {table}").fetchall()
            assert len(got) == len(set(got)) and set(got) == want, table
        incremental = {m.name: snapshot(con, m) for m in marts.MARTS}
        marts.refresh(con, full=True)
        full = {m.name: snapshot(con, m) for m in marts.MARTS}
    assert all(full.values()), [m for m, rows in full.items() if not rows]
    for mart in marts.MARTS:
        assert incremental[mart.name] == full[mart.name], mart.name


def test_a_mart_whose_sql_changed_is_rebuilt_in_full_by_the_next_refresh(tmp_path):
    """After an upgrade, a mart built by other SQL (here: its recorded fingerprint is another)
    is rebuilt in full, the others go on incrementally; a changed staging rebuilds everything."""
    lake = open_lake(str(tmp_path / "lake"))
    warehouse = Warehouse(tmp_path / "wh.duckdb", lake)

    commit_window(lake, "events", [opened("a", 0)])
    with warehouse.writer() as con:
        assert {r.mode for r in refresh_after_load(con, lake)} == {"full"}
        con.execute("UPDATE mart_watermarks SET value = value + 1 WHERE name = 'sql:sessions'")
    commit_window(lake, "events", [opened("b", 1)])
    with warehouse.writer() as con:
        modes = {r.mart: r.mode for r in refresh_after_load(con, lake)}
        assert modes.pop("sessions") == "full" and set(modes.values()) == {"incremental"}
        con.execute("UPDATE mart_watermarks SET value = value + 1 WHERE name = 'sql:_staging'")
    commit_window(lake, "events", [opened("c", 2)])
    with warehouse.writer() as con:
        assert {r.mode for r in refresh_after_load(con, lake)} == {"full"}
        assert con.execute("SELECT count(*) FROM sessions").fetchall() == [(3,)]
