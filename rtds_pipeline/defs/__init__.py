"""Dagster bindings only: the plain-Python cores wired into assets, sensors and checks."""

from __future__ import annotations

import dagster as dg

from rtds_pipeline.defs.assets import daily_partitions, day_table_asset, landing_spec
from rtds_pipeline.defs.lake import housekeeping_job, housekeeping_schedule
from rtds_pipeline.defs.marts import mart_asset, marts_sensor
from rtds_pipeline.defs.resources import RtdsResource
from rtds_pipeline.defs.sensors import source_sensor, stream_lag_check
from rtds_pipeline.settings import Settings
from rtds_pipeline.warehouse.events import TABLES
from rtds_pipeline.warehouse.marts import marts_for


def build_definitions(settings: Settings) -> dg.Definitions:
    """Everything for one configuration; loads without touching the network."""
    partitions = daily_partitions(settings)
    assets: list[object] = [landing_spec(s) for s in settings.sources]
    for kind in ("events", "compliance"):
        sources = [s for s in settings.sources if s.kind == kind]
        if sources:
            assets.append(day_table_asset(kind, sources, partitions))
    available = marts_for({s.kind for s in settings.sources})
    assets.extend(mart_asset(m, partitions) for m in available)
    tables = [t for kind, t in TABLES.items() if any(s.kind == kind for s in settings.sources)]
    sensors = [source_sensor(s, settings, partitions, dg.AssetKey(TABLES[s.kind]))
               for s in settings.sources]
    if available:
        sensors.append(marts_sensor(tables, [dg.AssetKey(m.name) for m in available],
                                    settings.marts_seconds))
    housekeeping = housekeeping_job(settings)
    return dg.Definitions(
        assets=assets,
        jobs=[housekeeping],
        schedules=[housekeeping_schedule(housekeeping, settings)],
        asset_checks=[stream_lag_check(s) for s in settings.sources],
        sensors=sensors,
        # Runs are one step each: executing it in the run's own process saves a process start.
        executor=dg.in_process_executor,
        resources={"rtds": RtdsResource(lake_url=settings.lake_url,
                                        warehouse_path=settings.warehouse_path,
                                        duckdb_memory_limit=settings.duckdb_memory_limit)},
    )
