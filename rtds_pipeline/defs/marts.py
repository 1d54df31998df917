"""The marts (`warehouse/marts/*.sql`) as one multi-asset: every refresh brings all of them up
to the newest loaded rows in one writer session — incrementally, the keys the new rows touch —
and publishes once, so a reader sees all marts of a refresh or none of it. Declarative
automation keeps them fresh: the `rtds_marts` automation-condition sensor requests a refresh
when `events` or `compliance_events` changed, at most every `RTDS_MARTS_SECONDS`."""

import datetime as dt

import dagster as dg
from dagster import AssetExecutionContext

from rtds_pipeline.defs.assets import WAREHOUSE_POOL
from rtds_pipeline.defs.resources import RtdsResource
from rtds_pipeline.warehouse import marts

# Real streams can carry opens of pushes whose sends fell out of RTDS's 7-day window, so a push
# with more opening channels than sends is a warning there, not wrong data.
WARN_ONLY = {"push_performance"}

# Refresh when an upstream table changed since the marts last ran (or were requested), or when
# they were never built; never while a refresh is running. The sensor's interval bounds how often.
REFRESH_WHEN = ((dg.AutomationCondition.any_deps_updated() | dg.AutomationCondition.missing())
                .since_last_handled()
                & ~dg.AutomationCondition.in_progress()).with_label("upstream changed")


class MartsConfig(dg.Config):
    full_refresh: bool = False  # recompute every mart over all history (after a backfill, say)


def _spec(mart: marts.Mart, upstream: set[str]) -> dg.AssetSpec:
    deps = [t for t in mart.sources if t in upstream or t in marts.BY_NAME]
    if "stg_events" in mart.reads:
        deps += sorted(upstream)
    return dg.AssetSpec(
        mart.name, group_name="marts", kinds={"duckdb"}, description=mart.description,
        deps=sorted(set(deps)), automation_condition=REFRESH_WHEN,
        metadata={"grain": dg.MetadataValue.json(list(mart.grain)),
                  "unique_key": mart.unique_key,
                  "refresh": "daily" if mart.daily else "incremental"})


def _check_specs(mart: marts.Mart) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec("grain_unique", asset=mart.name, blocking=True,
                          description=f"One row per {', '.join(mart.grain)}."),
        dg.AssetCheckSpec("consistent", asset=mart.name, blocking=mart.name not in WARN_ONLY,
                          description=f"No rows returned by warehouse/marts/{mart.name}.check.sql"),
    ]


def marts_asset(available: list[marts.Mart], tables: list[str]) -> dg.AssetsDefinition:
    upstream = set(tables)

    @dg.multi_asset(
        name="marts", specs=[_spec(m, upstream) for m in available], pool=WAREHOUSE_POOL,
        check_specs=[c for m in available for c in _check_specs(m)],
        description="Refreshes every mart in one writer session and publishes once.")
    def _marts(context: AssetExecutionContext, config: MartsConfig, rtds: RtdsResource):
        with rtds.warehouse().writer() as con:
            done = marts.refresh(con, available, full=config.full_refresh)
            results = []
            for r in done:
                mart = marts.BY_NAME[r.mart]
                scoped = r.mode == "incremental"  # checks cost what the refresh touched
                results.append((r, con.execute(f"SELECT count(*) FROM {mart.name}").fetchall()[0][0],
                                marts.grain_duplicates(con, mart, scoped),
                                marts.violations(con, mart, scoped=scoped),
                                marts.preview(con, mart)))
        # Written to the log once the writer has published: every mart at once.
        for r, total, dups, (bad, examples), (cols, rows) in results:
            context.log.info(f"{r.mart}: {r.mode}, {r.keys} key(s), {r.rows} row(s) written")
            yield dg.MaterializeResult(asset_key=r.mart, metadata={
                "dagster/row_count": total, "refresh": r.mode, "keys_refreshed": r.keys,
                "rows_written": r.rows, "seconds": round(r.seconds, 3),
                "refreshed_at": dg.MetadataValue.timestamp(r.refreshed_at),
                "newest_processed": dg.MetadataValue.timestamp(r.newest_processed)
                if r.newest_processed else dg.MetadataValue.null(),
                "preview": _table(cols, rows)})
            severity = (dg.AssetCheckSeverity.WARN if r.mart in WARN_ONLY
                        else dg.AssetCheckSeverity.ERROR)
            yield dg.AssetCheckResult(asset_key=r.mart, check_name="grain_unique",
                                      passed=dups == 0, metadata={"duplicated_keys": dups})
            yield dg.AssetCheckResult(
                asset_key=r.mart, check_name="consistent", passed=bad == 0, severity=severity,
                metadata={"violations": bad, "scope": "keys refreshed" if r.mode == "incremental"
                          else "whole mart",
                          "examples": dg.MetadataValue.json([[_cell(v) for v in e]
                                                             for e in examples])})

    return _marts


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


def marts_sensor(available: list[marts.Mart], interval_s: int) -> dg.SensorDefinition:
    return dg.AutomationConditionSensorDefinition(
        "rtds_marts", target=[dg.AssetKey(m.name) for m in available],
        minimum_interval_seconds=interval_s, default_status=dg.DefaultSensorStatus.RUNNING,
        description="Refreshes the marts (incrementally, one run, one publish) when events or "
                    "compliance_events changed.")

