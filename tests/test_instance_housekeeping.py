"""The Dagster instance's housekeeping on a real instance with this repository's dagster.yaml:
past the retention only the newest event of every asset partition and check stays, the UI's
partition status is unchanged, and runs left with no event are deleted."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import dagster as dg
import pytest

from rtds_pipeline.defs.instance import Pruned, prune_instance

ROOT = Path(__file__).resolve().parent.parent
DAYS = dg.DailyPartitionsDefinition(start_date="2026-01-01", end_date="2026-01-04")


@dg.asset(partitions_def=DAYS, check_specs=[dg.AssetCheckSpec("ok", asset="daily")])
def daily() -> dg.MaterializeResult:
    return dg.MaterializeResult(check_results=[dg.AssetCheckResult(passed=True)])


@dg.asset
def whole() -> None:
    dg.get_dagster_logger().info("a log line of the run")


@pytest.fixture
def instance(tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.from_config(str(home)) as inst:
        yield inst


def newest(instance: dg.DagsterInstance, key: str, partition: str | None = None) -> list[int]:
    page = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(key),
                              asset_partitions=[partition] if partition else None), limit=100)
    return [r.storage_id for r in page.records]


def test_prune_keeps_the_newest_event_of_every_partition_and_check(instance):
    runs = []
    for _ in range(3):
        for day in ("2026-01-01", "2026-01-02"):
            runs.append(dg.materialize([daily], instance=instance, partition_key=day).run_id)
        runs.append(dg.materialize([whole], instance=instance).run_id)
    status = instance.get_materialized_partitions(dg.AssetKey("daily"))
    before = {p: newest(instance, "daily", p) for p in status}
    whole_before = newest(instance, "whole")
    check = dg.AssetCheckKey(dg.AssetKey("daily"), "ok")
    latest_check = instance.event_log_storage.get_latest_asset_check_execution_by_key([check])
    assert all(len(ids) == 3 for ids in before.values()) and len(whole_before) == 3

    # Within the retention nothing goes.
    assert prune_instance(instance, keep_seconds=3600) == Pruned()
    assert newest(instance, "whole") == whole_before

    done = prune_instance(instance, keep_seconds=0, now=time.time() + 1)
    assert done.events > 0 and done.check_executions > 0 and not done.skipped
    # The newest materialization of each partition stays: the same event, and the only one.
    assert instance.get_materialized_partitions(dg.AssetKey("daily")) == status
    assert {p: newest(instance, "daily", p) for p in status} == {p: ids[:1] for p, ids in before.items()}
    assert newest(instance, "whole") == whole_before[:1]
    assert instance.event_log_storage.get_latest_asset_check_execution_by_key([check]) == latest_check
    history = instance.event_log_storage.get_asset_check_execution_history(check, limit=10)
    assert [h.id for h in history] == [latest_check[check].id]
    # Runs whose every event went are deleted; the three holding a newest event stay, with
    # their asset events only.
    kept = {r.dagster_run.run_id for r in instance.get_run_records()}
    assert done.runs == len(runs) - 3 and kept == set(runs[-3:])
    for run_id in kept:
        types = {e.dagster_event_type for e in instance.all_logs(run_id)}
        assert types <= {dg.DagsterEventType.ASSET_MATERIALIZATION,
                         dg.DagsterEventType.ASSET_CHECK_EVALUATION}, types
    # Pruning again finds nothing more.
    again = prune_instance(instance, keep_seconds=0, now=time.time() + 1)
    assert (again.events, again.check_executions, again.runs) == (0, 0, 0)


def test_a_database_per_run_is_left_alone():
    with dg.instance_for_test() as instance:  # Dagster's default SQLite layout
        dg.materialize([whole], instance=instance)
        done = prune_instance(instance, keep_seconds=0, now=time.time() + 1)
        assert done.skipped and "database per run" in done.skipped
        assert len(newest(instance, "whole")) == 1
