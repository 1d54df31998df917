"""`python -m bench.scale` at tiny sizes: it prefills, measures and ends with its RESULT line.
Never asserts on time: only that every configuration was measured."""

from __future__ import annotations

import datetime as dt

import pytest
from bench_runs import bench_result

from bench import scale
from rtds_pipeline.lake.storage import open_lake
from rtds_pipeline.warehouse import events as wh
from rtds_pipeline.warehouse.delta import DeltaEvents
from rtds_pipeline.warehouse.store import Warehouse


@pytest.mark.slow
def test_bench_scale_ends_with_a_result_for_every_configuration(tmp_path):
    result = bench_result("bench.scale", ["--day-sizes", "2000,4000", "--history", "5000",
                                          "--marts", "--runs", "1", "--window", "500"], tmp_path)
    configs = result["configs"]
    assert [(c["day_size"], c["history"]) for c in configs] == [(2000, 5000), (4000, 5000)]
    for c in configs:
        assert c["window_s"] > 0 and c["marts_s"] > 0 and c["local_bytes"] > 0
        assert set(c["ratio"]) == {"window_s", "marts_s", "local_bytes"}
        assert all(v > 0 for v in c["ratio"].values())
    assert configs[0]["ratio"] == {"window_s": 1.0, "marts_s": 1.0, "local_bytes": 1.0}
    assert not list(tmp_path.iterdir())  # the scratch folders are removed


def test_prefill_leaves_the_state_of_the_loads(tmp_path):
    """The index, the staging and the manifests agree with the Delta table, as after the
    loads: every row indexed and staged once, every window recorded and loaded, and the loads'
    next batch continues the Delta table's application transactions."""
    lake = open_lake(str(tmp_path / "lake"))
    warehouse = Warehouse(tmp_path / "warehouse.duckdb", lake)
    days = scale.plan_days(2500, 7000, 30, 1000)
    ids, sessions = scale.prefill(lake, warehouse, days, 1000, with_marts=False)
    delta = DeltaEvents(lake, "events")
    counts = delta.file_counts()
    assert len(counts) == 31 and counts[str(scale.DAY)] == 3  # settled days: one file each
    assert all(n == 1 for d, n in counts.items() if d != str(scale.DAY))
    with warehouse.writer(publish=False) as con:
        assert con.execute("SELECT count(*), count(DISTINCT id) FROM events").fetchall() == [
            (9500, 9500)]
        # The keys of the hot days (DAY and the 3 before it: the 72 h horizon), as the loads
        # leave them: every row of those days found in its day's store.
        store = wh.key_store(con, "events")
        floor = wh.hot_floor(con, "events")
        assert floor == scale.DAY - dt.timedelta(days=3) and store.days() == [
            floor + dt.timedelta(days=k) for k in range(4)]
        hot = con.sql("SELECT occurred_date AS day, key_hi(md5_number(id)) AS h, "
                      "key_lo(md5_number(id)) AS l FROM events WHERE occurred_date >= ?",
                      params=[floor]).to_arrow_table()
        assert hot.num_rows == sum(d.events for d in days if d.day >= floor) == 3199
        assert store.probe(hot).num_rows == hot.num_rows
        assert con.execute("SELECT count(*), count(DISTINCT id) FROM stg_events").fetchall() == [
            (9500, 9500)]
        # In stream order, as window after window appended it.
        assert con.execute("SELECT bool_and(processed >= before) FROM (SELECT processed, "
                           "lag(processed) OVER (ORDER BY rowid) AS before FROM stg_events)"
                           ).fetchall() == [(True,)]
        windows = con.execute(
            "SELECT count(*) FILTER (stop_reason = 'bench-prefill'), sum(events), "
            "count(*) FILTER (load_batch IS NULL), max(window_seq) FROM landing_windows"
        ).fetchall()[0]
        assert windows == (33, 9500, 0, days[-1].next_seq - 1)
        assert con.execute("SELECT sum(rows), count(DISTINCT day) FROM landing_files"
                           ).fetchall() == [(9500, 31)]
        assert con.execute("SELECT max(batch), sum(rows) FILTER (mode = 'window') "
                           "FROM load_batches WHERE state = 'done'").fetchall() == [
            (delta.loaded_version(wh._app_id("events")), 9500)]
    assert len(ids) == 2000 and len(set(sessions)) == 2000
