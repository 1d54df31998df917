"""Dagster bindings only: the plain-Python cores wired into assets, sensors and checks."""

from __future__ import annotations

import warnings

import dagster as dg

from rtds_pipeline.defs import instance
from rtds_pipeline.defs.assets import (
    daily_partitions,
    day_table_asset,
    fold_in_sensor,
    load_job,
    maintenance_job,
    maintenance_schedule,
)
from rtds_pipeline.defs.dagster_private import UnresolvedAssetJobDefinition
from rtds_pipeline.defs.lake import housekeeping_job, housekeeping_schedule
from rtds_pipeline.defs.landing import (
    landing_asset,
    read_job,
    stream_lag_check,
    webhook_landing_spec,
)
from rtds_pipeline.defs.marts import marts_asset, marts_job, marts_sensor
from rtds_pipeline.defs.resources import LakeResource, ReaderResource, WarehouseResource
from rtds_pipeline.defs.sensors import source_sensor
from rtds_pipeline.settings import Settings
from rtds_pipeline.warehouse.events import TABLES
from rtds_pipeline.warehouse.marts import marts_for


def build_definitions(settings: Settings) -> dg.Definitions:
    """Everything for one configuration; loads without touching the network."""
    with warnings.catch_warnings():
        # Two BetaWarnings Dagster raises by itself, once per asset or sensor in every process
        # that loads the code location: for `backfill_policy` (single-run backfills of the daily
        # assets need it), and for the sensors' `owners`, which it passes on, unset, when it
        # binds the resources to a sensor that targets jobs. Only these two are silenced; the
        # repository is resolved here, once (Dagster caches it), so none is raised later.
        warnings.filterwarnings("ignore", category=dg.BetaWarning,
                                message="Parameter `backfill_policy` of function `asset`")
        warnings.filterwarnings("ignore", category=dg.BetaWarning,
                                message="Parameter `owners` of initializer `SensorDefinition")
        defs = _definitions(settings)
        defs.get_repository_def()
    return defs


def _definitions(settings: Settings) -> dg.Definitions:
    partitions = daily_partitions(settings)
    assets: list[dg.AssetSpec | dg.AssetsDefinition] = [
        webhook_landing_spec(s) if s.webhook else landing_asset(s) for s in settings.sources]
    reads = {s.key: read_job(s) for s in settings.sources if not s.webhook}
    jobs: list[dg.JobDefinition | UnresolvedAssetJobDefinition] = []
    schedules, loads, maintained = [], {}, {}
    for kind in TABLES:
        sources = [s for s in settings.sources if s.feeds == kind]
        if sources:
            assets.append(day_table_asset(kind, sources, partitions))
            loads[kind] = load_job(kind, sources)
            maintenance = maintained[TABLES[kind]] = maintenance_job(kind, sources)
            jobs += [loads[kind], maintenance]
            schedules.append(maintenance_schedule(maintenance))
    available = marts_for({s.feeds for s in settings.sources})
    tables = [TABLES[kind] for kind in loads]
    if available:
        assets.append(marts_asset(available, tables))
    sensors = [source_sensor(s, settings.tick_seconds, loads[s.feeds], reads.get(s.key))
               for s in settings.sources]
    if maintained:
        sensors.append(fold_in_sensor(maintained))
    if available:
        refresh = marts_job(available)
        jobs.append(refresh)
        sensors.append(marts_sensor(refresh, tables, settings.marts_seconds))
    lake = LakeResource.from_settings(settings)
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
        jobs=[*reads.values(), *jobs],
        schedules=schedules,
        # Runs are one step each: executing it in the run's own process saves a process start.
        executor=dg.in_process_executor,
        resources={"lake": lake, "warehouse": WarehouseResource.from_settings(settings),
                   "reader": ReaderResource.from_settings(settings)},
    )
