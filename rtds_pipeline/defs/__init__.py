"""Dagster bindings only: the plain-Python cores wired into assets, sensors and checks."""

from __future__ import annotations

import dagster as dg

from rtds_pipeline.defs import instance
from rtds_pipeline.defs.assets import (
    daily_partitions,
    day_table_asset,
    landing_spec,
    load_job,
    maintenance_job,
    maintenance_schedule,
)
from rtds_pipeline.defs.lake import housekeeping_job, housekeeping_schedule
from rtds_pipeline.defs.marts import marts_asset, marts_sensor
from rtds_pipeline.defs.resources import RtdsResource
from rtds_pipeline.defs.sensors import source_sensor, stream_lag_check
from rtds_pipeline.settings import Settings
from rtds_pipeline.warehouse.events import TABLES
from rtds_pipeline.warehouse.marts import marts_for


def build_definitions(settings: Settings) -> dg.Definitions:
    """Everything for one configuration; loads without touching the network."""
    partitions = daily_partitions(settings)
    assets: list[dg.AssetSpec | dg.AssetsDefinition] = [landing_spec(s) for s in settings.sources]
    jobs, schedules, loads = [], [], {}
    for kind in TABLES:
        sources = [s for s in settings.sources if s.feeds == kind]
        if sources:
            assets.append(day_table_asset(kind, sources, partitions))
            loads[kind] = load_job(kind, sources)
            maintenance = maintenance_job(kind, sources)
            jobs += [loads[kind], maintenance]
            schedules.append(maintenance_schedule(maintenance))
    available = marts_for({s.feeds for s in settings.sources})
    tables = [TABLES[kind] for kind in loads]
    if available:
        assets.append(marts_asset(available, tables))
    sensors = [source_sensor(s, settings, loads[s.feeds]) for s in settings.sources]
    if available:
        sensors.append(marts_sensor(available, tables, settings.marts_seconds))
    housekeeping = housekeeping_job(settings)
    jobs.append(housekeeping)
    schedules.append(housekeeping_schedule(housekeeping, settings))
    pruning = instance.housekeeping_job(settings.dagster_history_days)
    jobs.append(pruning)
    schedules.append(instance.housekeeping_schedule(pruning))
    return dg.Definitions(
        assets=assets,
        # A webhook source is pushed to: an idle Airship is not lag, so no stream_lag check.
        asset_checks=[stream_lag_check(s) for s in settings.sources if not s.webhook],
        sensors=sensors,
        jobs=jobs,
        schedules=schedules,
        # Runs are one step each: executing it in the run's own process saves a process start.
        executor=dg.in_process_executor,
        resources={"rtds": RtdsResource(lake_url=settings.lake_url,
                                        warehouse_path=settings.warehouse_path,
                                        duckdb_memory_limit=settings.duckdb_memory_limit)},
    )
