"""Dagster bindings against real components: the test server over HTTP, a temporary Dagster
instance, the lake in a temporary folder and a real DuckDB file."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from dagster_runs import INSTANCE, cycle, execute, fold_in, landing_events, read_run, tick

from rtds_pipeline.defs import build_definitions
from rtds_pipeline.defs.assets import WAREHOUSE_POOL
from rtds_pipeline.defs.dagster_private import partition_range_tags
from rtds_pipeline.defs.landing import READER_TAG, reader_name
from rtds_pipeline.lake.commits import CommitLog
from rtds_pipeline.lake.live import live_files
from rtds_pipeline.settings import load_settings
from rtds_pipeline.testserver.config import Fault
from rtds_pipeline.warehouse.marts import MARTS

ROOT = Path(__file__).resolve().parent.parent


def settings_for(srv, tmp_path, **env):
    return load_settings({"RTDS_BASE_URL": srv.url, "RTDS_LAKE_URL": str(tmp_path / "lake"),
                          "RTDS_WAREHOUSE": str(tmp_path / "warehouse.duckdb"),
                          "RTDS_WINDOW_SECONDS": "20", **env})


def truth_ids(srv, compliance=False):
    return {r["id"] for r in srv.ground_truth() if (r["type"] == "COMPLIANCE") == compliance}


def table_ids(settings, table="events"):
    con = duckdb.connect(settings.warehouse_path, read_only=True)
    ids = [r[0] for r in con.execute(f"SELECT id FROM {table}").fetchall()]
    con.close()
    return ids


def test_definitions_load_without_network(monkeypatch):
    monkeypatch.setenv("RTDS_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    import rtds_pipeline.definitions as module
    defs = importlib.reload(module).defs
    keys = {k.to_user_string() for k in defs.resolve_all_asset_keys()}
    assert keys == {"landing/events", "landing/compliance", "events", "compliance_events",
                    *(m.name for m in MARTS)}
    assert {s.name for s in defs.sensors} == {"rtds_events", "rtds_compliance", "rtds_marts",
                                              "rtds_fold_in"}
    events = defs.resolve_assets_def("events")
    assert events.backfill_policy == dg.BackfillPolicy.single_run()
    # Every writer of the warehouse waits for the one pool slot.
    writers = [events.node_def, *(defs.resolve_job_def(j).nodes[0].definition for j in (
        "load_events", "load_compliance_events", "events_maintenance"))]
    assert [w.pool for w in writers] == [WAREHOUSE_POOL] * 4
    # Each source is read by its own job, in its own pool, with a retry policy.
    for source in ("events", "compliance"):
        reader = defs.resolve_job_def(f"read_{source}")
        assert reader.tags[READER_TAG] == source
        [node] = reader.nodes
        assert node.definition.pool == f"rtds_reader_{source}"
        assert node.definition.retry_policy.max_retries > 0
        # What keeps the landing asset fresh: the source's sensor targets its job.
        sensor = defs.resolve_sensor_def(f"rtds_{source}")
        assert {j.name for j in sensor.jobs} == {f"read_{source}", f"load_{'events' if source == 'events' else 'compliance_events'}"}
    checks = {k.name for k in defs.resolve_asset_graph().asset_check_keys}
    assert checks == {"unique_id", "reconciliation", "dead_letters", "quarantine", "stream_lag",
                      "grain_unique", "consistent"}


def test_one_sensor_and_one_reading_job_per_partition_reader(tmp_path):
    settings = load_settings({"RTDS_PARTITIONS": "3", "RTDS_LAKE_URL": str(tmp_path)})
    defs = build_definitions(settings)
    names = {s.name for s in defs.sensors}
    assert names == {"rtds_events_p0of3", "rtds_events_p1of3", "rtds_events_p2of3", "rtds_compliance",
                     "rtds_marts", "rtds_fold_in"}
    pools = {defs.resolve_job_def(f"read_events_p{i}of3").nodes[0].definition.pool
             for i in range(3)}
    assert pools == {f"rtds_reader_events_p{i}of3" for i in range(3)}


def test_sensor_keeps_one_reading_run_going_and_requests_loads(fresh_server, tmp_path):
    srv = fresh_server(backlog=3000)
    settings = settings_for(srv, tmp_path)
    defs = build_definitions(settings)
    lake = defs.resources["lake"].lake()
    with dg.instance_for_test(overrides=INSTANCE) as instance:
        first = tick(defs, instance)  # nothing committed yet: a reading run, no load
        [request] = first.run_requests
        assert request.job_name == "read_events" and request.tags[READER_TAG] == "events"
        assert json.loads(first.cursor)["window_seq"] == 0

        run = execute(defs, instance, request)
        mats, checks = landing_events(run)
        [landing] = mats
        assert landing.asset_key == dg.AssetKey(["landing", "events"])
        stream_events = sum(1 for r in srv.ground_truth() if r["type"] != "COMPLIANCE")
        assert landing.metadata["events"].value == stream_events
        assert landing.metadata["reconnects"].value == 0
        assert landing.metadata["last_errors"].value == []
        [lag] = checks
        assert lag.passed and lag.metadata["lag_seconds"].value == 0.0  # caught up
        commit = CommitLog(lake, "events").latest()
        assert commit.window_seq == 1

        second = tick(defs, instance, cursor=first.cursor)  # the commit: a load; and reading on
        assert json.loads(second.cursor)["window_seq"] == 1
        assert json.loads(second.cursor)["resume_offset"] == commit.resume_offset
        load, read = sorted(second.run_requests, key=lambda r: r.job_name)
        assert load.job_name == "load_events" and load.run_key == "events/w1"
        assert read.job_name == "read_events"

        # At most one reading run per source: none is requested while one is queued or running.
        running = instance.create_run_for_job(defs.resolve_job_def("read_events"),
                                             status=dg.DagsterRunStatus.STARTED)
        busy = tick(defs, instance, cursor=second.cursor)
        assert not busy.run_requests and "reading run in progress" in busy.skip_reason.skip_message
        instance.delete_run(running.run_id)

        idle = read_run(defs, instance)  # nothing new: no materialization, the lag check still
        mats, checks = landing_events(idle)
        assert not mats and [c.passed for c in checks] == [True]

    # A wiped instance has no cursor: the sensor resumes from the lake (nothing is read twice)
    # and requests a load, which loads whatever the warehouse has not loaded.
    with dg.instance_for_test() as wiped:
        again = tick(defs, wiped)
        assert json.loads(again.cursor)["window_seq"] == 1
        assert {r.job_name for r in again.run_requests} == {"load_events", "read_events"}


def test_a_reading_run_asked_to_terminate_stops_after_its_window(fresh_server, tmp_path):
    """What the UI's Terminate and `make run`'s Ctrl-C do: the run ends at the next window
    boundary, with what it read committed, though it had minutes of budget left."""
    import threading

    srv = fresh_server(backlog=500)
    defs = build_definitions(settings_for(srv, tmp_path, RTDS_WINDOW_SECONDS="2",
                                          RTDS_TICK_SECONDS="1"))
    with dg.instance_for_test() as instance:
        results = []
        reader = threading.Thread(target=lambda: results.append(
            read_run(defs, instance, until_caught_up=False, seconds=600)))
        reader.start()
        deadline = time.monotonic() + 120
        while not instance.get_runs() and time.monotonic() < deadline:
            time.sleep(0.2)
        [run] = instance.get_runs()
        while CommitLog(defs.resources["lake"].lake(), "events").latest() is None:
            assert time.monotonic() < deadline, "the reading run committed nothing"
            time.sleep(0.2)
        instance.report_run_canceling(run)
        reader.join(120)
        assert not reader.is_alive() and results
        mats, _ = landing_events(results[0])
        assert mats and mats[0].metadata["events"].value > 0


def test_a_failed_reading_run_is_not_retried_at_every_tick(fresh_server, tmp_path, monkeypatch):
    srv = fresh_server(backlog=100)
    # A token the server does not know: 401, which no retry can fix.
    monkeypatch.setenv("RTDS_ACCESS_TOKEN", "no-such-token")
    defs = build_definitions(settings_for(srv, tmp_path))
    with dg.instance_for_test(overrides=INSTANCE) as instance:
        first = tick(defs, instance)
        [request] = first.run_requests
        run = execute(defs, instance, request, raise_on_error=False)
        assert not run.success
        failure = run.failure_data_for_node(run.job_def.nodes[0].name)
        assert "HTTP 401" in failure.error.message
        # The failure was not retried by the retry policy: one attempt.
        assert not [e for e in run.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
        later = tick(defs, instance, cursor=first.cursor)
        assert not later.run_requests and "failed" in later.skip_reason.skip_message


def test_load_runs_do_not_pile_up_and_report_only_changed_days(fresh_server, tmp_path):
    srv = fresh_server(backlog=3000)
    defs = build_definitions(settings_for(srv, tmp_path))
    with dg.instance_for_test() as instance:
        read_run(defs, instance)
        first = tick(defs, instance)
        [request] = [r for r in first.run_requests if r.job_name == "load_events"]
        # A queued load run loads every pending window when it starts: no second request.
        run = instance.create_run_for_job(defs.resolve_job_def("load_events"),
                                          status=dg.DagsterRunStatus.NOT_STARTED)
        srv.generate(300)
        read_run(defs, instance)
        second = tick(defs, instance, cursor=first.cursor)
        assert json.loads(second.cursor)["window_seq"] == 2
        assert not [r for r in second.run_requests if r.job_name == "load_events"]
        instance.delete_run(run.run_id)
        result = execute(defs, instance, request)
        # Both windows loaded by one run; one materialization per day they touched, no more.
        lake = defs.resources["lake"].lake()
        touched = {d for c in CommitLog(lake, "events").all() for d in c.days}
        # Days behind the horizon wait for the maintenance job's fold-in: not materialized here.
        writer = defs.resources["warehouse"].warehouse(lake).writer_path
        with duckdb.connect(str(writer), read_only=True) as con:
            cold = {str(d) for (d,) in con.execute("SELECT day FROM cold_days").fetchall()}
        assert cold and cold < touched
        mats = result.asset_materializations_for_node("load_events_windows")
        assert {m.partition for m in mats} == touched - cold
        # Each partition's row count is the day's rows in the table; the load's own count is
        # labelled as such.
        with duckdb.connect(defs.resources["warehouse"].path, read_only=True) as con:
            per_day = dict(con.execute("SELECT occurred_date::VARCHAR, count(*) FROM events "
                                       "GROUP BY ALL").fetchall())
        assert {m.partition: m.metadata["dagster/row_count"].value for m in mats} == per_day
        assert sum(m.metadata["rows added by this load"].value for m in mats) == sum(per_day.values())


def test_fault_mid_window_then_runs_build_events_equal_to_ground_truth(fresh_server, tmp_path):
    srv = fresh_server(backlog=4000)
    settings = settings_for(srv, tmp_path)
    defs = build_definitions(settings)
    srv.arm(Fault("reset", after=1500))
    with dg.instance_for_test(overrides=INSTANCE) as instance:
        cursor = None
        for round_ in range(3):
            cursor = cycle(defs, instance, cursor=cursor).cursor
            if round_ == 0:
                srv.arm(Fault("eof", after=200))
            if round_ < 2:
                srv.generate(600)
        cycle(defs, instance, cursor=cursor, read=False)  # the load of the last reading run
        comp = cycle(defs, instance, name="rtds_compliance")
        cycle(defs, instance, name="rtds_compliance", cursor=comp.cursor, read=False)
        # The late devices' days behind the horizon, rebuilt by the maintenance run the fold-in
        # sensor requests; then it waits for the next load to leave some.
        assert [r.job_name for r in fold_in(defs, instance)] == ["events_maintenance"]
        assert fold_in(defs, instance) == []
        # The marts sensor sees the new partitions and refreshes every mart in one run.
        marts_tick = tick(defs, instance, name="rtds_marts")
        [refresh] = marts_tick.run_requests
        assert refresh.job_name == "refresh_marts"  # a job named for what it does, in the UI
        assert set(defs.resolve_job_def("refresh_marts").asset_layer.executable_asset_keys) == {
            dg.AssetKey(m.name) for m in MARTS}
        execute(defs, instance, refresh)
        again = tick(defs, instance, name="rtds_marts", cursor=marts_tick.cursor)
        assert again.run_requests == [] and "unchanged" in again.skip_reason.skip_message
        with duckdb.connect(settings.warehouse_path, read_only=True) as con:
            fresh = dict(con.execute("SELECT mart, newest_processed FROM mart_freshness").fetchall())
            newest = con.execute("SELECT max(processed) FROM events").fetchall()[0][0]
        assert set(fresh) == {m.name for m in MARTS} and set(fresh.values()) == {newest}
        # The checks ran and passed on every run.
        keys = [dg.AssetCheckKey(dg.AssetKey("events"), n) for n in ("unique_id", "reconciliation")]
        keys += [dg.AssetCheckKey(dg.AssetKey(m.name), n) for m in MARTS
                 for n in ("grain_unique", "consistent")]
        evaluations = instance.event_log_storage.get_latest_asset_check_execution_by_key(keys)
        assert len(evaluations) == len(keys)
        assert all(e.status.value == "SUCCEEDED" for e in evaluations.values())
        # Every landing materialization belongs to a reading run, and the reset is in its
        # metadata and in that run's logs.
        records = instance.fetch_materializations(dg.AssetKey(["landing", "events"]), limit=100)
        assert records.records and all(
            instance.get_run_by_id(r.run_id).job_name == "read_events" for r in records.records)
        first = records.records[-1].asset_materialization  # newest first
        assert first.metadata["reconnects"].value >= 1
        assert first.metadata["last_errors"].value
        logs = [e.user_message for e in instance.all_logs(records.records[-1].run_id)]
        assert any("reconnecting in" in m for m in logs)
    ids = table_ids(settings)
    assert len(ids) == len(set(ids)) and set(ids) == truth_ids(srv)
    comp_ids = table_ids(settings, "compliance_events")
    assert len(comp_ids) == len(set(comp_ids)) and set(comp_ids) == truth_ids(srv, compliance=True)


def test_range_backfill_equals_the_incremental_path(fresh_server, tmp_path):
    srv = fresh_server(backlog=5000)
    incremental = settings_for(srv, tmp_path / "inc")
    defs = build_definitions(incremental)
    with dg.instance_for_test() as instance:
        # Before any load the marts sensor waits (no table has a materialization yet).
        assert "nothing loaded" in tick(defs, instance, name="rtds_marts").skip_reason.skip_message
        cursor = None
        for round_ in range(3):  # three windows, each followed by its load
            cursor = cycle(defs, instance, cursor=cursor).cursor
            if round_ < 2:
                srv.generate(700)
        cycle(defs, instance, cursor=cursor, read=False)
        fold_in(defs, instance)
        days = sorted({d for c in CommitLog(defs.resources["lake"].lake(), "events").all()
                       for d in c.days})
    # The same landing, rebuilt from scratch into a new warehouse by one range run (as the UI's
    # "materialize partition range" or `dagster asset materialize --partition-range` does).
    shutil.copytree(tmp_path / "inc" / "lake", tmp_path / "bf" / "lake",
                    ignore=shutil.ignore_patterns("tables"))
    backfill = settings_for(srv, tmp_path / "bf")
    bdefs = build_definitions(backfill)
    with dg.instance_for_test() as instance:
        request = dg.RunRequest(asset_selection=[dg.AssetKey("events")],
                                tags=partition_range_tags(days[0], days[-1]))
        result = execute(bdefs, instance, request)
        assert len(result.get_asset_materialization_events()) == len(
            bdefs.resolve_assets_def("events").partitions_def.get_partition_keys_in_range(
                dg.PartitionKeyRange(days[0], days[-1])))
    q = "SELECT * EXCLUDE (source) FROM events ORDER BY occurred_date, occurred, rtds_offset"
    a = duckdb.connect(incremental.warehouse_path, read_only=True).execute(q).fetchall()
    b = duckdb.connect(backfill.warehouse_path, read_only=True).execute(q).fetchall()
    assert a == b and len(a) == len(truth_ids(srv))


@pytest.mark.slow
@pytest.mark.timeout(900)  # six run processes start on two cores; slower still on a loaded box
def test_end_to_end_four_partition_readers_as_four_concurrent_runs(fresh_server, tmp_path,
                                                                     monkeypatch):
    """`dagster dev` with this repository's workspace.yaml and dagster.yaml, RTDS_PARTITIONS=4:
    the sensors request one reading run per partition reader, the run queue starts them side by
    side in separate processes (as a run launcher would on separate machines), each reader lands
    a disjoint part of the stream, their union is the stream, and the loads build `events` equal
    to the server's ground truth."""
    srv = fresh_server(backlog=6000)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home)
    env = {**os.environ, "DAGSTER_HOME": str(home), "RTDS_BASE_URL": srv.url,
           "RTDS_LAKE_URL": str(tmp_path / "lake"), "RTDS_WAREHOUSE": str(tmp_path / "wh.duckdb"),
           "RTDS_PARTITIONS": "4", "RTDS_WINDOW_SECONDS": "10", "RTDS_TICK_SECONDS": "5",
           # Long enough that every reader's first run is still reading when the last starts,
           # even when starting a run takes half a minute on a loaded machine.
           "RTDS_READ_RUN_SECONDS": "240"}
    settings = load_settings(env)
    readers = [s for s in settings.sources if s.subset]
    assert len(readers) == 4
    proc = subprocess.Popen([sys.executable, "-m", "dagster", "dev", "-w", str(ROOT / "workspace.yaml"),
                             "-p", "0"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    want, want_c = truth_ids(srv), truth_ids(srv, compliance=True)
    try:
        deadline = time.monotonic() + 780
        got: list[str] = []
        while time.monotonic() < deadline:
            time.sleep(3)
            if Path(settings.warehouse_path).exists():
                got, got_c = table_ids(settings), table_ids(settings, "compliance_events")
                if set(got) == want and set(got_c) == want_c:
                    break
        assert len(got) == len(set(got)) and set(got) == want
        assert len(got_c) == len(set(got_c)) and set(got_c) == want_c
        lake = build_definitions(settings).resources["lake"].lake()
        landed = {s.key: set(duckdb.connect().execute("SELECT id FROM read_parquet(?)", [
            [lake.path(f.path) for f in live_files(lake, s.key)]]).fetchall()) for s in readers}
        parts = list(landed.values())
        assert all(parts) and sum(map(len, parts)) == len(set().union(*parts))  # disjoint
        assert {i for (i,) in set().union(*parts)} == want  # together: the stream
        monkeypatch.setenv("DAGSTER_HOME", str(home))
        with dg.DagsterInstance.get() as instance:
            spans = []
            for s in readers:
                runs = instance.get_run_records(dg.RunsFilter(job_name=f"read_{reader_name(s)}"),
                                                ascending=True)
                assert runs and runs[0].dagster_run.tags[READER_TAG] == s.key
                spans.append((runs[0].start_time, runs[0].end_time or time.time()))
            # Four runs, one per reader, running at the same time.
            assert max(start for start, _ in spans) < min(end for _, end in spans)
            records = instance.fetch_materializations(
                dg.AssetKey(["landing", readers[0].key]), limit=50).records
            assert records and all(instance.get_run_by_id(r.run_id).job_name ==
                                   f"read_{reader_name(readers[0])}" for r in records)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            pass
        try:  # reading runs still reading, in dagster dev's process group
            os.killpg(proc.pid, 9)
        except ProcessLookupError:
            pass
        proc.wait()


@pytest.mark.slow
def test_an_event_from_both_the_stream_and_the_webhook_is_one_row(tmp_path):
    """One test server streams its events and POSTs the same events to the webhook receiver:
    both sources land them, their sensors request loads, `events` holds each id once."""
    from test_webhook import Receiver, sender_options, sender_state, sending_server, wait_until

    receiver = Receiver(tmp_path, auth=True).start()
    server = sending_server(sender_options(receiver.url, batch=10, concurrency=8), backlog=1500)
    try:
        wait_until(lambda: sender_state(server, "caught_up"), "the sender to catch up")
        sources = tmp_path / "sources.toml"
        sources.write_text(f'[[sources]]\nname = "events"\nbase_url = "{server.url}"\n\n'
                           '[[sources]]\nname = "hook"\nkind = "webhook"\n')
        settings = load_settings({"RTDS_SOURCES_FILE": str(sources),
                                  "RTDS_LAKE_URL": receiver.lake_url,
                                  "RTDS_WAREHOUSE": str(tmp_path / "warehouse.duckdb")})
        defs = build_definitions(settings)
        assert {k.to_user_string() for k in defs.resolve_all_asset_keys()} >= {
            "landing/events", "landing/hook", "events"}
        with dg.instance_for_test() as instance:
            [landing], _ = landing_events(read_run(defs, instance))
            assert landing.metadata["events"].value > 0
            result = cycle(defs, instance, name="rtds_hook")  # the webhook's commits, reported
            [landing] = [e for e in result.asset_events if isinstance(e, dg.AssetMaterialization)]
            assert landing.metadata["events"].value > 0
            cycle(defs, instance)
            fold_in(defs, instance)
        landed = {s: duckdb.connect().execute(
            f"SELECT count(DISTINCT id) FROM read_parquet('{receiver.lake_url}/landing/"
            f"source={s}/*/*.parquet')").fetchall()[0][0] for s in ("events", "hook")}
        want = truth_ids(server)
        assert landed["events"] == len(want) and landed["hook"] > len(want) // 2
    finally:
        server.stop()
        receiver.stop()
    ids = table_ids(settings)
    assert len(ids) == len(set(ids)) and set(ids) == want


def test_a_failing_blocking_mart_check_publishes_nothing_and_fails_the_refresh(tmp_path):
    """A refresh whose blocking check fails is rolled back: the run fails with the finding and
    what to do, the checks show it in Dagster, no mart is materialized, and readers keep the
    last good snapshot (its marts and mart_freshness); the next refresh retries from there."""
    from landing import commit_window, event

    from rtds_pipeline.lake.storage import open_lake

    lake = open_lake(str(tmp_path / "lake"))
    settings = load_settings({"RTDS_LAKE_URL": lake.root, "RTDS_FIRST_DAY": "2026-11-01",
                              "RTDS_WAREHOUSE": str(tmp_path / "warehouse.duckdb")})
    defs = build_definitions(settings)

    def consent(id_, offset, address, **fields):
        return event(id_, "COMPLIANCE", "2026-11-20T10:00:00Z", offset,
                     body={"event_type": "register", "identifiers": {"address": address},
                           "properties": {"commercial_opted_in": "2026-11-20T10:00:00Z"}},
                     **fields)

    def published():
        with duckdb.connect(settings.warehouse_path, read_only=True) as con:
            if not con.execute("SELECT count(*) FROM duckdb_tables() "
                               "WHERE table_name = 'mart_freshness'").fetchall()[0][0]:
                return None  # no marts refresh yet
            return (con.execute("SELECT * FROM warehouse_snapshot").fetchall(),
                    con.execute("SELECT * FROM mart_freshness ORDER BY 1").fetchall(),
                    con.execute("SELECT event_id, address FROM consent_ledger ORDER BY 1").fetchall())

    def refresh(instance):
        """The loads (each publishes a snapshot), then the marts' refresh: its result and the
        snapshot readers had before it."""
        for job in ("load_events", "load_compliance_events"):
            assert defs.resolve_job_def(job).execute_in_process(instance=instance).success
        before = published()
        return defs.resolve_job_def("refresh_marts").execute_in_process(
            instance=instance, raise_on_error=False), before

    commit_window(lake, "compliance", [consent("c1", 1, "b@example.com")])
    commit_window(lake, "events", [event("s1", "OPEN", "2026-11-20T09:00:00Z", 1,
                                         device={"channel": "ch1", "device_type": "IOS"})])
    with dg.instance_for_test() as instance:
        assert refresh(instance)[0].success
        good = published()
        assert good[2] == [("c1", "b@example.com")]
        # The same id as the compliance event, as an email channel's opt-in: data no real stream
        # sends, which gives the ledger two rows of one (event_id, message_type).
        commit_window(lake, "events", [event(
            "c1", "SUBSCRIPTION", "2026-11-21T10:00:00Z", 2,
            device={"channel": "ch2", "device_type": "EMAIL", "delivery_address": "b@example.com"},
            body={"properties": {"commercial_opted_in": "2026-11-21T10:00:00Z"}})])
        for attempt in range(2):  # and the next refresh fails the same way, from the same state
            result, before = refresh(instance)
            assert not result.success
            failure = result.failure_data_for_node("marts").error.message
            assert "consent_ledger: grain_unique failed" in failure
            assert "nothing was published" in failure and "readers keep the previous" in failure
            assert not [e for e in result.all_events if e.is_step_materialization]
            checks = {(e.event_specific_data.asset_key.to_user_string(),
                       e.event_specific_data.check_name): e.event_specific_data
                      for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}
            grain = checks["consent_ledger", "grain_unique"]
            assert not grain.passed and grain.severity == dg.AssetCheckSeverity.ERROR
            assert checks["sessions", "grain_unique"].passed
            assert published() == before and before[1:] == good[1:], attempt
