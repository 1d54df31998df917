"""Assets: one landing asset per source (materialized by its sensor) and the day-partitioned
`events` / `compliance_events` tables built from them, with their checks."""

import datetime as dt
from collections.abc import Iterator, Sequence

import dagster as dg
from dagster import AssetExecutionContext

from rtds_pipeline.defs.resources import RtdsResource
from rtds_pipeline.settings import Settings, SourceConfig
from rtds_pipeline.warehouse import events as wh

WAREHOUSE_POOL = "duckdb_warehouse"  # one writer at a time (dagster_home/dagster.yaml)
TABLE_TAG = "rtds/table"
# Sensor runs cover the range of days a window touched and rebuild only the days whose committed
# files changed; runs without the tag (UI or CLI backfills) rebuild every day they target.
REBUILD_TAG, REBUILD_CHANGED = "rtds/rebuild", "changed"


def landing_key(source: SourceConfig) -> dg.AssetKey:
    return dg.AssetKey(["landing", source.key])


def daily_partitions(settings: Settings) -> dg.DailyPartitionsDefinition:
    """Days by `occurred` (UTC). RTDS delivers events up to 90 days old, so the default range
    starts 100 days back; end_offset=2 admits today and events a few minutes in the future."""
    start = settings.first_day or (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=100)).isoformat()
    return dg.DailyPartitionsDefinition(start_date=start, timezone="UTC", end_offset=2)


def landing_spec(source: SourceConfig) -> dg.AssetSpec:
    endpoint = "/api/events/general" if source.compliance else "/api/events"
    return dg.AssetSpec(
        landing_key(source), group_name="landing", kinds={"parquet"},
        description=(f"Committed Parquet windows of source `{source.key}` ({endpoint}), "
                     "written by its sensor; each materialization is one committed window."),
        metadata={"source": source.key, "endpoint": endpoint})


def day_table_asset(kind: str, sources: Sequence[SourceConfig],
                    partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    table = wh.TABLES[kind]

    @dg.asset(
        name=table, group_name="warehouse", kinds={"duckdb"}, partitions_def=partitions,
        deps=[landing_key(s) for s in sources], pool=WAREHOUSE_POOL,
        backfill_policy=dg.BackfillPolicy.single_run(), tags={TABLE_TAG: table},
        check_specs=[
            dg.AssetCheckSpec("unique_id", asset=table, blocking=True,
                              description="No event id appears twice in the whole table."),
            dg.AssetCheckSpec("reconciliation", asset=table, blocking=True,
                              description="Unique ids landed for the day = rows of the day "
                                          "(+ ids whose first copy lives in another day)."),
            dg.AssetCheckSpec("dead_letters", asset=table,
                              description="Unparseable lines in the windows that landed the day."),
        ],
        description=(f"One row per event id, by `occurred` day (UTC), from the committed landing "
                     f"files of {', '.join(s.key for s in sources)}: deduplicated across all copies, "
                     "ordered by occurred then stream position, typed envelope and body columns, "
                     "the original JSON in `raw`. Rebuilding a day is idempotent."),
    )
    def _asset(context: AssetExecutionContext, rtds: RtdsResource) -> Iterator[object]:
        changed_only = context.run.tags.get(REBUILD_TAG) == REBUILD_CHANGED
        asked = list(context.partition_keys)
        lake = rtds.lake()
        with rtds.warehouse().writer(lake) as con:
            wh.sync_manifest(con, lake, sources)
            skip = wh.current_days(con, kind, asked) if changed_only else set()
            days = [d for d in asked if d not in skip]
            builds = wh.build_days(con, kind, days)
            dups = wh.duplicate_ids(con, kind, days) if days else []
            recs = wh.reconcile_days(con, kind, days) if days else []
            dead = wh.dead_letters_near(con, kind, days) if days else 0
            total = con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
        for b in builds:
            if b.landed_rows:
                context.log.info(f"{table} {b.day}: {b.rows} rows from {b.landed_rows} landed in "
                                 f"{b.files} files ({b.copies_dropped} copies dropped)")
        yield dg.MaterializeResult(metadata={
            "days_rebuilt": len(days), "days_already_current": len(skip),
            "rows": sum(b.rows for b in builds),
            "landed_rows": sum(b.landed_rows for b in builds),
            "files": sum(b.files for b in builds),
            "copies_dropped": sum(b.copies_dropped for b in builds),
            "table_rows": total, "dagster/row_count": sum(b.rows for b in builds),
        })
        yield dg.AssetCheckResult(
            check_name="unique_id", passed=not dups,
            metadata={"duplicated_ids": len(dups), "examples": str([r[0] for r in dups[:5]])})
        off = [r.day for r in recs if not r.ok]
        yield dg.AssetCheckResult(
            check_name="reconciliation", passed=not off,
            metadata={"landed_unique": sum(r.landed_unique for r in recs),
                      "rows": sum(r.rows for r in recs),
                      "kept_elsewhere": sum(r.kept_elsewhere for r in recs),
                      "missing": sum(r.missing for r in recs),
                      "not_landed": sum(r.not_landed for r in recs),
                      "days_off": str(off[:20])})
        yield dg.AssetCheckResult(
            check_name="dead_letters", passed=dead == 0, severity=dg.AssetCheckSeverity.WARN,
            metadata={"dead_letters": dead,
                      "where": "dead_letter/source=<source>/ in the lake (raw bytes, error, position)"})

    return _asset
