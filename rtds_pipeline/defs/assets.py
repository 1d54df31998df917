"""Assets and jobs of the curated tables: `events` / `compliance_events`, day-partitioned Delta
tables in the lake.

- The **load job** (`load_<table>`), requested by the source sensors after a commit: loads every
  committed window not loaded yet (one run catches up however many windows are pending) and
  reports a materialization for each day partition it changed, nothing else.
- The **asset** itself, materialized for a range of days (UI or CLI backfills): rebuilds those
  days from the landing zone; the same rows as the loads.
- The **maintenance job** (`<table>_maintenance`, hourly, and requested by the sensor
  `rtds_fold_in` as soon as a load leaves days behind the horizon to it): rebuilds those days
  from the landing zone (the backfill path), compacts settled days, vacuums old files, and checks
  the whole table against the whole landing zone.
"""

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
from dagster import AssetExecutionContext, OpExecutionContext

from rtds_pipeline.defs.resources import LakeResource, WarehouseResource
from rtds_pipeline.settings import Settings, SourceConfig
from rtds_pipeline.warehouse import events as wh
from rtds_pipeline.warehouse.delta import DeltaEvents

WAREHOUSE_POOL = "duckdb_warehouse"  # one writer at a time (dagster_home/dagster.yaml)
TABLE_TAG = "rtds/table"
SETTLE_HOURS = 3  # a day is compacted this long after it ended (late events still come later)
VACUUM_HOURS = 24  # files a snapshot used stay this long: readers holding it keep working


def landing_key(source: SourceConfig) -> dg.AssetKey:
    return dg.AssetKey(["landing", source.key])


def daily_partitions(settings: Settings) -> dg.DailyPartitionsDefinition:
    """Days by `occurred` (UTC) from `settings.first_day` (a fixed day, RTDS_FIRST_DAY);
    end_offset=2 admits today and events a few minutes in the future."""
    return dg.DailyPartitionsDefinition(start_date=settings.first_day, timezone="UTC", end_offset=2)


def _check_specs(table: str) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec("unique_id", asset=table, blocking=True,
                          description="Every id landed (by the loaded windows, the rebuilt days, "
                                      "or — in the maintenance job — the whole landing zone) is "
                                      "kept exactly once in its occurred day."),
        dg.AssetCheckSpec("reconciliation", asset=table, blocking=True,
                          description="No landed id is missing from the table; the maintenance "
                                      "job also checks rows = distinct (id, day)s = landed ones, "
                                      "and the hot days' keys = their rows."),
        dg.AssetCheckSpec("dead_letters", asset=table,
                          description="Unparseable lines in the windows that landed these days."),
        dg.AssetCheckSpec("quarantine", asset=table,
                          description="Committed rows or files that break the table's contract "
                                      "(kept in <table>_quarantine, not loaded)."),
    ]


def _blocking_checks(table: str, check: wh.WindowCheck) -> list[dg.AssetCheckEvaluation]:
    key = dg.AssetKey(table)
    return [
        dg.AssetCheckEvaluation(asset_key=key, check_name="unique_id", passed=check.duplicated == 0,
                                metadata={"ids_checked": check.landed_ids,
                                          "duplicated_ids": check.duplicated}),
        dg.AssetCheckEvaluation(asset_key=key, check_name="reconciliation", passed=check.missing == 0,
                                metadata={"ids_checked": check.landed_ids, "missing": check.missing}),
    ]


def _checks(table: str, kind: str, con, check: wh.WindowCheck, days: Sequence[str]
            ) -> list[dg.AssetCheckEvaluation]:
    dead = wh.dead_letters_near(con, kind, days) if days else 0
    quarantined, examples = wh.quarantined(con, kind)
    key = dg.AssetKey(table)
    return [
        *_blocking_checks(table, check),
        dg.AssetCheckEvaluation(
            asset_key=key, check_name="dead_letters", passed=dead == 0,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"dead_letters": dead,
                      "where": "dead_letter/source=<source>/ in the lake (raw bytes, error, position)"}),
        dg.AssetCheckEvaluation(
            asset_key=key, check_name="quarantine", passed=quarantined == 0,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"quarantined": quarantined,
                      "examples": dg.MetadataValue.json([list(map(str, e)) for e in examples]),
                      "where": f"table {table}_quarantine in the warehouse"}),
    ]


def _day_metadata(result: wh.LoadResult, day: str, rows: dict[str, int]) -> dict[str, Any]:
    """A day partition after a load: its rows in the table (what the UI shows as its row count)
    and what this load added to it."""
    return {"dagster/row_count": rows.get(day, 0),
            "rows added by this load": result.days.get(day, 0),
            "load_batches": dg.MetadataValue.json(result.batches)}


def day_table_asset(kind: str, sources: Sequence[SourceConfig],
                    partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    table = wh.TABLES[kind]

    @dg.asset(
        name=table, group_name="warehouse", kinds={"delta", "duckdb"}, partitions_def=partitions,
        deps=[landing_key(s) for s in sources], pool=WAREHOUSE_POOL,
        backfill_policy=dg.BackfillPolicy.single_run(), tags={TABLE_TAG: table},
        check_specs=_check_specs(table),
        description=(f"One row per event id, by `occurred` day (UTC), from the committed landing "
                     f"files of {', '.join(s.key for s in sources)}: deduplicated across all copies "
                     "(the first delivered is kept), typed envelope and body columns, the original "
                     "JSON in `raw`. A Delta table in the lake (`tables/" + table + "`), a view in "
                     "warehouse.duckdb. New windows are loaded by the job `load_" + table + "`; "
                     "materializing days here rebuilds them from the landing zone (backfill)."),
    )
    def _asset(context: AssetExecutionContext, lake: LakeResource,
               warehouse: WarehouseResource) -> Iterator[object]:
        days = list(context.partition_keys)
        store = lake.lake()
        with warehouse.warehouse(store).writer() as con:
            wh.load_all(con, store, sources, kind)
            result = wh.rebuild_days(con, store, kind, days)
            check = wh.check_days(con, store, kind, days)
            checks = _checks(table, kind, con, check, days)
        context.log.info(f"{table}: rebuilt {len(days)} day(s), {result.rows} rows from "
                         f"{result.landed_rows} landed ({result.copies_dropped} copies dropped)")
        # One result for every day of the range: a row count is the partition's only for one day.
        counts = {"dagster/row_count": result.rows} if len(days) == 1 else {}
        yield dg.MaterializeResult(metadata={
            "days_rebuilt": len(days), "rows of the days rebuilt": result.rows,
            "landed_rows": result.landed_rows, "copies_dropped": result.copies_dropped, **counts})
        for ev in checks:
            yield dg.AssetCheckResult(check_name=ev.check_name, passed=ev.passed,
                                      severity=ev.severity, metadata=ev.metadata)

    return _asset


def load_job(kind: str, sources: Sequence[SourceConfig]) -> dg.JobDefinition:
    """Loads the committed windows not loaded yet into the table, O(those windows)."""
    table = wh.TABLES[kind]

    @dg.op(name=f"load_{table}_windows", pool=WAREHOUSE_POOL,
           description=f"Load the committed landing windows not loaded yet into `{table}`.")
    def _load(context: OpExecutionContext, lake: LakeResource,
              warehouse: WarehouseResource) -> None:
        store = lake.lake()
        try:
            with warehouse.warehouse(store).writer() as con:
                result = wh.load_all(con, store, sources, kind)
                checks = _checks(table, kind, con, result.check, sorted(result.days))
        except wh.LoadCheckFailed as failed:  # nothing written: the checks say why
            for ev in _blocking_checks(table, failed.check):
                context.log_event(ev)  # type: ignore[arg-type]
            raise dg.Failure(description=str(failed), allow_retries=False) from None
        # A load that found nothing pending (an earlier run took its windows) stays off the
        # console: its line is in the run's log.
        (context.log.info if result.windows else context.log.debug)(
            f"{table}: {result.windows} window(s), {result.rows} new rows in "
            f"{len(result.days)} day(s), {result.copies_dropped} copies dropped, "
            f"{result.quarantined} quarantined")
        days = sorted({*result.days, *result.rebuilt})
        rows = DeltaEvents(store, table).rows_by_day(days)
        for day in days:
            context.log_event(dg.AssetMaterialization(
                asset_key=table, partition=day, metadata=_day_metadata(result, day, rows)))
        for ev in checks:
            # log_event handles AssetCheckEvaluation; Dagster's UserEvent type omits it.
            context.log_event(ev)  # type: ignore[arg-type]

    @dg.job(name=f"load_{table}", tags={TABLE_TAG: table},
            description=f"Loads new committed windows into `{table}` (requested by the source "
                        "sensors; one run catches up every pending window).")
    def _job() -> None:
        _load()

    return _job


def maintenance_job(kind: str, sources: Sequence[SourceConfig]) -> dg.JobDefinition:
    """Whole-history work, apart from the loads: compaction, vacuum, full checks."""
    table = wh.TABLES[kind]

    @dg.op(name=f"{table}_maintenance_op", pool=WAREHOUSE_POOL)
    def _maintain(context: OpExecutionContext, lake: LakeResource,
                  warehouse: WarehouseResource) -> None:
        store = lake.lake()
        with warehouse.warehouse(store).writer() as con:
            wh.load_all(con, store, sources, kind)
            folded = wh.fold_in_cold(con, store, kind)
            days = wh.days_to_compact(con, store, kind, SETTLE_HOURS)
            wh.compact_days(con, store, kind, days)
            full = wh.full_check(con, store, kind)
        removed = DeltaEvents(store, table).vacuum(VACUUM_HOURS)
        context.log.info(f"{table}: folded in {len(folded.rebuilt)} day(s) behind the horizon "
                         f"({folded.rows} rows), compacted {len(days)} settled day(s), vacuumed "
                         f"{len(removed)} file(s); full check {'ok' if full.ok else 'FAILED'}")
        for day in folded.rebuilt:
            context.log_event(dg.AssetMaterialization(
                asset_key=table, partition=day, metadata={
                    "rebuilt": "behind the horizon: folded in from the landing zone",
                    "dagster/row_count": folded.days.get(day, 0)}))
        for day in days:
            context.log_event(dg.AssetMaterialization(
                asset_key=table, partition=day, metadata={"compacted": True}))
        key = dg.AssetKey(table)
        context.log_event(dg.AssetCheckEvaluation(  # type: ignore[arg-type]
            asset_key=key, check_name="unique_id", passed=full.rows == full.distinct_ids,
            metadata={"scope": "whole table", "rows": full.rows, "distinct_ids": full.distinct_ids}))
        context.log_event(dg.AssetCheckEvaluation(  # type: ignore[arg-type]
            asset_key=key, check_name="reconciliation", passed=full.ok,
            metadata={"scope": "whole table", "rows": full.rows, "landed_ids": full.landed_ids,
                      "missing": full.missing, "hot_rows": full.hot_rows,
                      "index_keys": full.index_keys, "ids_in_two_days": full.ids_in_two_days}))

    @dg.job(name=f"{table}_maintenance", tags={TABLE_TAG: table},
            description=f"Compacts settled days of `{table}` (sorted by occurred, one file a "
                        f"day), vacuums files older than {VACUUM_HOURS} h, checks the whole table.")
    def _job() -> None:
        _maintain()

    return _job


def fold_in_sensor(jobs: dict[str, dg.JobDefinition]) -> dg.SensorDefinition:
    """Requests a table's maintenance run as soon as a load left it days behind the horizon
    (`cold_days` in warehouse.duckdb, read-only), rather than at the next hourly run; never while
    one is queued or running. The run key is the newest such day's arrival: one run for it."""

    @dg.sensor(name="rtds_fold_in", jobs=list(jobs.values()), minimum_interval_seconds=60,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="Requests the maintenance job of a table when a load left it rows of "
                           "days behind the horizon (RTDS_HOT_HOURS), which it rebuilds from the "
                           "landing zone.")
    def _sensor(context: dg.SensorEvaluationContext,
                warehouse: WarehouseResource) -> dg.SensorResult:
        from rtds_pipeline.defs.sensors import ACTIVE  # sensors.py imports this module

        if not Path(warehouse.path).exists():
            return dg.SensorResult(skip_reason="no warehouse published yet")
        with duckdb.connect(warehouse.path, read_only=True) as con:
            waiting = con.execute("SELECT table_name, count(DISTINCT day), max(seen_at) "
                                  "FROM cold_days GROUP BY 1 ORDER BY 1").fetchall()
        requests = []
        for table, days, newest in waiting:
            job = jobs.get(table)
            if job is None or context.instance.get_run_records(filters=dg.RunsFilter(
                    job_name=job.name, statuses=ACTIVE), limit=1):
                continue
            requests.append(dg.RunRequest(job_name=job.name, tags={TABLE_TAG: table},
                                          run_key=f"fold-in/{table}/{newest.isoformat()}"))
            context.log.info(f"{table}: {days} day(s) behind the horizon to fold in")
        return dg.SensorResult(run_requests=requests, skip_reason=None if requests else (
            "nothing behind the horizon" if not waiting else "a maintenance run is active"),
            cursor=json.dumps([[t, n, str(w)] for t, n, w in waiting]))

    return _sensor


def maintenance_schedule(job: dg.JobDefinition) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(job=job, cron_schedule="17 * * * *",
                                 default_status=dg.DefaultScheduleStatus.RUNNING)
