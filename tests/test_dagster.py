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
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from rtds_pipeline.defs import build_definitions
from rtds_pipeline.defs.assets import WAREHOUSE_POOL
from rtds_pipeline.lake.commits import CommitLog
from rtds_pipeline.settings import load_settings
from rtds_pipeline.testserver.config import Fault
from rtds_pipeline.warehouse.marts import MARTS

ROOT = Path(__file__).resolve().parent.parent


def settings_for(srv, tmp_path, **env):
    return load_settings({"RTDS_BASE_URL": srv.url, "RTDS_LAKE_URL": str(tmp_path / "lake"),
                          "RTDS_WAREHOUSE": str(tmp_path / "warehouse.duckdb"),
                          "RTDS_WINDOW_SECONDS": "20", **env})


def tick(defs, instance, name="rtds_events", cursor=None):
    ctx = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs,
                                  resources=defs.resources)
    return defs.get_sensor_def(name)(ctx)


def execute(defs, instance, request):
    """Run what a RunRequest asks for, in process, on the same instance."""
    if request.job_name:
        result = defs.get_job_def(request.job_name).execute_in_process(
            instance=instance, tags=request.tags)
    else:
        result = dg.materialize(
            list({id(a): a for a in map(defs.get_assets_def, request.asset_selection)}.values()),
            instance=instance,
            tags=request.tags, resources=defs.resources)
    assert result.success
    return result


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
    assert {s.name for s in defs.sensors} == {"rtds_events", "rtds_compliance", "rtds_marts"}
    events = defs.get_assets_def("events")
    assert events.backfill_policy == dg.BackfillPolicy.single_run()
    # Every writer of the warehouse waits for the one pool slot.
    writers = [events.node_def, *(defs.get_job_def(j).nodes[0].definition for j in (
        "load_events", "load_compliance_events", "events_maintenance"))]
    assert [w.pool for w in writers] == [WAREHOUSE_POOL] * 4
    checks = {k.name for k in defs.resolve_asset_graph().asset_check_keys}
    assert checks == {"unique_id", "reconciliation", "dead_letters", "quarantine", "stream_lag",
                      "grain_unique", "consistent"}


def test_one_sensor_per_partition_reader(tmp_path):
    settings = load_settings({"RTDS_PARTITIONS": "3", "RTDS_LAKE_URL": str(tmp_path)})
    names = {s.name for s in build_definitions(settings).sensors}
    assert names == {"rtds_events_p0of3", "rtds_events_p1of3", "rtds_events_p2of3", "rtds_compliance",
                     "rtds_marts"}


def test_sensor_ticks_first_nothing_new_and_wiped_instance(fresh_server, tmp_path):
    srv = fresh_server(backlog=3000)
    settings = settings_for(srv, tmp_path)
    defs = build_definitions(settings)
    with dg.instance_for_test() as instance:
        first = tick(defs, instance)
        [landing] = [e for e in first.asset_events if isinstance(e, dg.AssetMaterialization)]
        assert landing.asset_key == dg.AssetKey(["landing", "events"])
        stream_events = sum(1 for r in srv.ground_truth() if r["type"] != "COMPLIANCE")
        assert landing.metadata["events"].value == stream_events
        assert json.loads(first.cursor)["window_seq"] == 1
        commit = CommitLog(defs.resources["rtds"].lake(), "events").latest()
        assert json.loads(first.cursor)["resume_offset"] == commit.resume_offset
        [request] = first.run_requests
        assert request.job_name == "load_events" and request.run_key == "events/w1"
        [lag] = [e for e in first.asset_events if isinstance(e, dg.AssetCheckEvaluation)]
        assert lag.passed and lag.metadata["lag_seconds"].value == 0.0  # caught up

        idle = tick(defs, instance, cursor=first.cursor)
        assert idle.skip_reason is not None and not idle.run_requests
        assert not [e for e in idle.asset_events if isinstance(e, dg.AssetMaterialization)]
        assert idle.cursor == first.cursor

        srv.generate(400)
        more = tick(defs, instance, cursor=idle.cursor)
        assert json.loads(more.cursor)["window_seq"] == 2
        assert [r.run_key for r in more.run_requests] == ["events/w2"]

    # A wiped instance has no cursor: the sensor resumes from the lake (nothing is read twice)
    # and requests a load, which loads whatever the warehouse has not loaded.
    with dg.instance_for_test() as wiped:
        again = tick(defs, wiped)
        assert json.loads(again.cursor)["window_seq"] == 2
        assert not [e for e in again.asset_events if isinstance(e, dg.AssetMaterialization)]
        [request] = again.run_requests
        assert request.job_name == "load_events"


def test_load_runs_do_not_pile_up_and_report_only_changed_days(fresh_server, tmp_path):
    srv = fresh_server(backlog=3000)
    defs = build_definitions(settings_for(srv, tmp_path))
    with dg.instance_for_test() as instance:
        first = tick(defs, instance)
        [request] = first.run_requests
        # A queued load run loads every pending window when it starts: no second request.
        run = instance.create_run_for_job(defs.get_job_def("load_events"),
                                          status=dg.DagsterRunStatus.NOT_STARTED)
        srv.generate(300)
        second = tick(defs, instance, cursor=first.cursor)
        assert json.loads(second.cursor)["window_seq"] == 2 and not second.run_requests
        instance.delete_run(run.run_id)
        result = execute(defs, instance, request)
        # Both windows loaded by one run; one materialization per day they touched, no more.
        lake = defs.resources["rtds"].lake()
        touched = {d for c in CommitLog(lake, "events").all() for d in c.days}
        days = {m.partition for m in result.asset_materializations_for_node("load_events_windows")}
        assert days == touched


def test_fault_mid_window_then_runs_build_events_equal_to_ground_truth(fresh_server, tmp_path):
    srv = fresh_server(backlog=4000)
    settings = settings_for(srv, tmp_path)
    defs = build_definitions(settings)
    srv.arm(Fault("reset", after=1500))
    with dg.instance_for_test() as instance:
        cursor = None
        for round_ in range(3):
            result = tick(defs, instance, cursor=cursor)
            cursor = result.cursor
            for request in result.run_requests:
                execute(defs, instance, request)
            if round_ == 0:
                srv.arm(Fault("eof", after=200))
            if round_ < 2:
                srv.generate(600)
        comp = tick(defs, instance, name="rtds_compliance")
        for request in comp.run_requests:
            execute(defs, instance, request)
        # The marts sensor sees the loads and refreshes every mart in one run; then nothing
        # changed, nothing is requested.
        marts_tick = tick(defs, instance, name="rtds_marts")
        [refresh] = marts_tick.run_requests
        assert set(refresh.asset_selection) == {dg.AssetKey(m.name) for m in MARTS}
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
    ids = table_ids(settings)
    assert len(ids) == len(set(ids)) and set(ids) == truth_ids(srv)
    comp_ids = table_ids(settings, "compliance_events")
    assert len(comp_ids) == len(set(comp_ids)) and set(comp_ids) == truth_ids(srv, compliance=True)


def test_range_backfill_equals_the_incremental_path(fresh_server, tmp_path):
    srv = fresh_server(backlog=5000)
    incremental = settings_for(srv, tmp_path / "inc")
    defs = build_definitions(incremental)
    with dg.instance_for_test() as instance:
        cursor = None
        for round_ in range(3):  # three windows, each followed by its sensor's run
            result = tick(defs, instance, cursor=cursor)
            cursor = result.cursor
            for request in result.run_requests:
                execute(defs, instance, request)
            if round_ < 2:
                srv.generate(700)
        days = sorted({d for c in CommitLog(defs.resources["rtds"].lake(), "events").all()
                       for d in c.days})
    # The same landing, rebuilt from scratch into a new warehouse by one range run (as the UI's
    # "materialize partition range" or `dagster asset materialize --partition-range` does).
    shutil.copytree(tmp_path / "inc" / "lake", tmp_path / "bf" / "lake",
                    ignore=shutil.ignore_patterns("tables"))
    backfill = settings_for(srv, tmp_path / "bf")
    bdefs = build_definitions(backfill)
    with dg.instance_for_test() as instance:
        request = dg.RunRequest(asset_selection=[dg.AssetKey("events")], tags={
            ASSET_PARTITION_RANGE_START_TAG: days[0], ASSET_PARTITION_RANGE_END_TAG: days[-1]})
        result = execute(bdefs, instance, request)
        assert len(result.get_asset_materialization_events()) == len(
            bdefs.get_assets_def("events").partitions_def.get_partition_keys_in_range(
                dg.PartitionKeyRange(days[0], days[-1])))
    q = "SELECT * EXCLUDE (source) FROM events ORDER BY occurred_date, occurred, rtds_offset"
    a = duckdb.connect(incremental.warehouse_path, read_only=True).execute(q).fetchall()
    b = duckdb.connect(backfill.warehouse_path, read_only=True).execute(q).fetchall()
    assert a == b and len(a) == len(truth_ids(srv))


@pytest.mark.slow
def test_end_to_end_with_dagster_daemon(fresh_server, tmp_path):
    """`dagster dev` with this repository's workspace.yaml and dagster.yaml: the running sensors
    land the stream and launch runs until `events` equals the server's ground truth."""
    srv = fresh_server(backlog=6000)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home)
    env = {**os.environ, "DAGSTER_HOME": str(home), "RTDS_BASE_URL": srv.url,
           "RTDS_LAKE_URL": str(tmp_path / "lake"), "RTDS_WAREHOUSE": str(tmp_path / "wh.duckdb"),
           "RTDS_WINDOW_SECONDS": "10", "RTDS_TICK_SECONDS": "5"}
    settings = load_settings(env)
    proc = subprocess.Popen([sys.executable, "-m", "dagster", "dev", "-w", str(ROOT / "workspace.yaml"),
                             "-p", "0"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    want, want_c = truth_ids(srv), truth_ids(srv, compliance=True)
    try:
        deadline = time.monotonic() + 240
        got: list[str] = []
        while time.monotonic() < deadline:
            time.sleep(3)
            if Path(settings.warehouse_path).exists():
                got, got_c = table_ids(settings), table_ids(settings, "compliance_events")
                if set(got) == want and set(got_c) == want_c:
                    break
        assert len(got) == len(set(got)) and set(got) == want
        assert len(got_c) == len(set(got_c)) and set(got_c) == want_c
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)


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
            for name in ("rtds_events", "rtds_hook"):
                result = tick(defs, instance, name=name)
                [landing] = [e for e in result.asset_events if isinstance(e, dg.AssetMaterialization)]
                assert landing.metadata["events"].value > 0
                for request in result.run_requests:
                    execute(defs, instance, request)
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
