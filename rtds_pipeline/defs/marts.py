"""One asset per mart (`warehouse/marts/*.sql`), downstream of `events` / `compliance_events`,
with a blocking check on the uniqueness of its grain and a check of its own consistency."""

import json

import dagster as dg
from dagster import AssetExecutionContext, SensorEvaluationContext

from rtds_pipeline.defs.assets import WAREHOUSE_POOL
from rtds_pipeline.defs.dagster_private import partition_range_tags
from rtds_pipeline.defs.resources import LakeResource, WarehouseResource
from rtds_pipeline.warehouse import marts

# Real streams can carry opens of pushes whose sends fell out of RTDS's 7-day window, so a push
# with more opening channels than sends is a warning there, not wrong data.
WARN_ONLY = {"push_performance"}


def mart_asset(mart: marts.Mart, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    severity = dg.AssetCheckSeverity.WARN if mart.name in WARN_ONLY else dg.AssetCheckSeverity.ERROR

    @dg.asset(
        name=mart.name, group_name="marts", kinds={"duckdb"}, pool=WAREHOUSE_POOL,
        deps=[dg.AssetKey(t) for t in mart.reads if t != "landing_windows"],
        partitions_def=partitions if mart.daily else None,
        backfill_policy=dg.BackfillPolicy.single_run() if mart.daily else None,
        description=mart.description,
        check_specs=[
            dg.AssetCheckSpec("grain_unique", asset=mart.name, blocking=True,
                              description=f"One row per {', '.join(mart.grain)}."),
            dg.AssetCheckSpec("consistent", asset=mart.name, blocking=mart.name not in WARN_ONLY,
                              description=f"No rows returned by warehouse/marts/{mart.name}.check.sql"),
        ],
    )
    def _asset(context: AssetExecutionContext, lake: LakeResource, warehouse: WarehouseResource):
        days = list(context.partition_keys) if mart.daily else []
        with warehouse.warehouse(lake.lake()).writer() as con:
            written = marts.refresh(con, mart, days)
            dups = marts.grain_duplicates(con, mart)
            bad, examples = marts.violations(con, mart)
            preview = marts.preview(con, mart)
        yield dg.MaterializeResult(metadata={
            "dagster/row_count": written, "preview": dg.MetadataValue.md(preview),
            "refreshed": f"{len(days)} day(s)" if mart.daily else "full"})
        yield dg.AssetCheckResult(check_name="grain_unique", passed=dups == 0,
                                  metadata={"duplicated_keys": dups})
        yield dg.AssetCheckResult(check_name="consistent", passed=bad == 0, severity=severity,
                                  metadata={"violations": bad, "examples": dg.MetadataValue.json(
                                      [list(map(str, e)) for e in examples])})

    return _asset


def marts_sensor(tables: list[str], mart_keys: list[dg.AssetKey],
                 interval_s: int) -> dg.SensorDefinition:
    """Refreshes the marts after `events` / `compliance_events` changed, at most every
    `interval_s`: one run for every mart, daily marts over the range of days that changed.
    Kept out of the sensors' runs so that a new window reaches `events` without waiting for
    full-refresh marts."""

    @dg.sensor(name="rtds_marts", minimum_interval_seconds=interval_s, asset_selection=mart_keys,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="Refreshes the marts when events or compliance_events changed.")
    def _sensor(context: SensorEvaluationContext) -> dg.SensorResult:
        seen = json.loads(context.cursor) if context.cursor else {}
        days: set[str] = set()
        for table in tables:
            page = None
            while page is None or page.has_more:
                page = context.instance.fetch_materializations(
                    dg.AssetRecordsFilter(asset_key=dg.AssetKey(table),
                                          after_storage_id=seen.get(table)),
                    limit=1000, ascending=True)
                for record in page.records:
                    if record.partition_key:
                        days.add(record.partition_key)
                    seen[table] = max(seen.get(table, 0), record.storage_id)
        if not days:
            return dg.SensorResult(skip_reason="events unchanged since the last marts run",
                                   cursor=json.dumps(seen))
        first, last = min(days), max(days)
        return dg.SensorResult(cursor=json.dumps(seen), run_requests=[dg.RunRequest(
            run_key="marts/" + "/".join(f"{t}:{seen.get(t, 0)}" for t in tables),
            asset_selection=mart_keys,
            tags=partition_range_tags(first, last))])

    return _sensor
