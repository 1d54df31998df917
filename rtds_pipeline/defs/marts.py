"""One asset per mart (`warehouse/marts/*.sql`), downstream of `events` / `compliance_events`,
with a blocking check on the uniqueness of its grain and a check of its own consistency."""

import dagster as dg
from dagster import AssetExecutionContext

from rtds_pipeline.defs.assets import WAREHOUSE_POOL
from rtds_pipeline.defs.resources import RtdsResource
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
    def _asset(context: AssetExecutionContext, rtds: RtdsResource):
        days = list(context.partition_keys) if mart.daily else []
        with rtds.warehouse().writer() as con:
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
                                  metadata={"violations": bad, "examples": str(examples)[:500]})

    return _asset
