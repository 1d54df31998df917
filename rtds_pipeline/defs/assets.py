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
        lake = rtds.lake()
        with rtds.warehouse().writer(lake) as con:
            wh.sync_manifest(con, lake, sources)
            days = [d for d in context.partition_keys
                    if not (changed_only and wh.is_current(con, kind, d))]
            builds = [wh.build_day(con, kind, d) for d in days]
            dups = {d: wh.duplicate_ids(con, kind, d) for d in days}
            recs = {d: wh.reconcile_day(con, kind, d) for d in days}
            dead = {d: wh.dead_letters_near(con, kind, d) for d in days}
            total = con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
        for b in builds:
            context.log.info(f"{table} {b.day}: {b.rows} rows from {b.landed_rows} landed in "
                             f"{b.files} files ({b.duplicates} duplicate copies dropped, "
                             f"{b.kept_elsewhere} kept in another day)")
        yield dg.MaterializeResult(metadata={
            "days_rebuilt": len(days), "days_already_current": len(context.partition_keys) - len(days), "rows": sum(b.rows for b in builds),
            "landed_rows": sum(b.landed_rows for b in builds),
            "files": sum(b.files for b in builds),
            "duplicates_dropped": sum(b.duplicates for b in builds),
            "kept_in_other_days": sum(b.kept_elsewhere for b in builds),
            "table_rows": total, "dagster/row_count": sum(b.rows for b in builds),
        })
        bad = {d: rows for d, rows in dups.items() if rows}
        yield dg.AssetCheckResult(
            check_name="unique_id", passed=not bad,
            metadata={"duplicated_ids": sum(len(v) for v in bad.values()),
                      "examples": str([r[0] for v in bad.values() for r in v][:5])})
        off = {d: r for d, r in recs.items() if not r.ok}
        yield dg.AssetCheckResult(
            check_name="reconciliation", passed=not off,
            metadata={"landed_unique": sum(r.landed_unique for r in recs.values()),
                      "rows": sum(r.rows for r in recs.values()),
                      "kept_elsewhere": sum(r.kept_elsewhere for r in recs.values()),
                      "days_off": str(sorted(off))})
        n_dead = sum(dead.values())
        yield dg.AssetCheckResult(
            check_name="dead_letters", passed=n_dead == 0, severity=dg.AssetCheckSeverity.WARN,
            metadata={"dead_letters": n_dead,
                      "where": "dead_letter/source=<source>/ in the lake (raw bytes, error, position)"})

    return _asset
