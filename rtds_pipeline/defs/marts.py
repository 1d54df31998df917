"""The marts (`warehouse/marts/*.sql`) as one multi-asset: every refresh brings all of them up
to the newest loaded rows in one writer session — incrementally, the keys the new rows touch —
and publishes once, so a reader sees all marts of a refresh or none of it. The `rtds_marts`
sensor requests a refresh when `events` or `compliance_events` changed, at most every
`RTDS_MARTS_SECONDS`."""

import datetime as dt
import json
from collections.abc import Iterator

import dagster as dg
from dagster import AssetExecutionContext

from rtds_pipeline.defs.assets import WAREHOUSE_POOL
from rtds_pipeline.defs.dagster_private import UnresolvedAssetJobDefinition
from rtds_pipeline.defs.resources import LakeResource, WarehouseResource
from rtds_pipeline.warehouse import marts

MARTS_TAG = "rtds/marts"
MARTS_JOB = "refresh_marts"

ACTIVE = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED,
          dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]


class MartsConfig(dg.Config):
    full_refresh: bool = False  # recompute every mart over all history (after a backfill, say)


def _spec(mart: marts.Mart, upstream: set[str]) -> dg.AssetSpec:
    deps = [t for t in mart.sources if t in upstream or t in marts.BY_NAME]
    if "stg_events" in mart.reads:
        deps += sorted(upstream)
    return dg.AssetSpec(
        mart.name, group_name="marts", kinds={"duckdb"}, description=mart.description,
        deps=sorted(set(deps)),
        metadata={"grain": dg.MetadataValue.json(list(mart.grain)),
                  "unique_key": mart.unique_key,
                  "refresh": "daily" if mart.daily else "incremental"})


def _check_specs(mart: marts.Mart) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec("grain_unique", asset=mart.name, blocking=True,
                          description=f"One row per {', '.join(mart.grain)}."),
        dg.AssetCheckSpec("consistent", asset=mart.name, blocking=mart.name not in marts.WARN_ONLY,
                          description=f"No rows returned by warehouse/marts/{mart.name}.check.sql"),
    ]


def marts_asset(available: list[marts.Mart], tables: list[str]) -> dg.AssetsDefinition:
    upstream = set(tables)

    @dg.multi_asset(
        name="marts", specs=[_spec(m, upstream) for m in available], pool=WAREHOUSE_POOL,
        check_specs=[c for m in available for c in _check_specs(m)],
        description="Refreshes every mart in one writer session and publishes once.")
    def _marts(context: AssetExecutionContext, config: MartsConfig, lake: LakeResource,
               warehouse: WarehouseResource):
        try:
            with warehouse.warehouse(lake.lake()).writer() as con:
                done = marts.refresh(con, available, full=config.full_refresh)
        except marts.ChecksFailed as failed:
            # Rolled back, not published: the checks say why, the run fails with what to do.
            for r in failed.done:
                yield from _check_results(r)
            raise dg.Failure(description=str(failed), allow_retries=False) from None
        # Written to the log once the writer has published: every mart at once, in one line
        # (each mart's numbers are its materialization's metadata).
        context.log.info("marts refreshed and published: " + ", ".join(
            f"{r.mart} {r.mode} ({r.keys} key(s), {r.rows} row(s))" for r in done))
        for r in done:
            yield dg.MaterializeResult(asset_key=r.mart, metadata={
                "dagster/row_count": r.total_rows, "refresh": r.mode, "keys_refreshed": r.keys,
                "rows_written": r.rows, "seconds": round(r.seconds, 3),
                "refreshed_at": dg.MetadataValue.timestamp(r.refreshed_at),
                "newest_processed": dg.MetadataValue.timestamp(r.newest_processed)
                if r.newest_processed else dg.MetadataValue.null(),
                "preview": _table(r.columns, r.preview)})
            yield from _check_results(r)

    return _marts


def _check_results(r: marts.Refreshed) -> Iterator[dg.AssetCheckResult]:
    severity = (dg.AssetCheckSeverity.WARN if r.mart in marts.WARN_ONLY
                else dg.AssetCheckSeverity.ERROR)
    yield dg.AssetCheckResult(
        asset_key=r.mart, check_name="grain_unique", passed=r.duplicates == 0,
        metadata={"duplicated_keys": r.duplicates,
                  "examples": dg.MetadataValue.json([[_cell(v) for v in e]
                                                     for e in r.duplicate_examples])})
    yield dg.AssetCheckResult(
        asset_key=r.mart, check_name="consistent", passed=r.violations == 0, severity=severity,
        metadata={"violations": r.violations,
                  "scope": "keys refreshed" if r.mode == "incremental" else "whole mart",
                  "examples": dg.MetadataValue.json([[_cell(v) for v in e] for e in r.examples])})


def _cell(value: object) -> str | int | float | bool | None:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return str(value)


def _table(cols: list[str], rows: list[tuple]) -> dg.MetadataValue:
    return dg.MetadataValue.table(
        records=[dg.TableRecord({c: _cell(v) for c, v in zip(cols, row, strict=True)})
                 for row in rows],
        schema=dg.TableSchema(columns=[dg.TableColumn(c) for c in cols]))


def marts_job(available: list[marts.Mart]) -> UnresolvedAssetJobDefinition:
    """The marts' refresh as a job of its own: runs named for what they do in the UI."""
    return dg.define_asset_job(
        MARTS_JOB, selection=[dg.AssetKey(m.name) for m in available], tags={MARTS_TAG: "refresh"},
        description="Refreshes every mart (incrementally; `full_refresh: true` in the op config "
                    "recomputes everything) and publishes them at once.")


def marts_sensor(job: UnresolvedAssetJobDefinition, tables: list[str],
                 interval_s: int) -> dg.SensorDefinition:
    """Requests one refresh of every mart when `events` or `compliance_events` has a newer
    materialization than the last request saw, at most every `interval_s` and never while a
    refresh is queued or running (it would find nothing new to do).

    Hand-written, not declarative automation: measured in `bench.soak` at 500 events/s, the
    automation-condition sensor stored ~40 KB of condition evaluation per mart and refresh (the
    upstream tables' daily partitions, serialized) in the schedule storage, ~27 MB/h that
    Dagster keeps for a fixed 30 days, as much as all the rest of the instance. These ticks are
    a few hundred bytes, purged by dagster.yaml's tick retention."""
    keys = [dg.AssetKey(t) for t in tables]

    @dg.sensor(name="rtds_marts", job=job, minimum_interval_seconds=interval_s,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="Refreshes the marts (incrementally, one run, one publish) when events "
                           "or compliance_events changed.")
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        seen = json.loads(context.cursor) if context.cursor else None
        records = {r.asset_entry.asset_key: r for r in context.instance.get_asset_records(keys)}
        newest = {}
        for key in keys:  # a table never materialized has no record
            last = records[key].asset_entry.last_materialization_record if key in records else None
            newest[key.to_user_string()] = last.storage_id if last else 0
        if not any(newest.values()):
            return dg.SensorResult(skip_reason="nothing loaded into events yet")
        if newest == seen:
            return dg.SensorResult(skip_reason="events unchanged since the last refresh")
        active = context.instance.get_run_records(
            filters=dg.RunsFilter(tags={MARTS_TAG: "refresh"}, statuses=ACTIVE), limit=1)
        if active:
            return dg.SensorResult(skip_reason="a marts refresh is still queued or running")
        return dg.SensorResult(cursor=json.dumps(newest), run_requests=[dg.RunRequest(
            job_name=MARTS_JOB, tags={MARTS_TAG: "refresh"},
            run_key="marts/" + "/".join(f"{k}:{v}" for k, v in sorted(newest.items())))])

    return _sensor
