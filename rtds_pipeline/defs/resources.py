"""Dagster resources, one per thing they hold, each built from the one `Settings` object
(`from_settings`): the lake, the warehouse, and how readers read. Definitions capture only
their structure (sources, schedules); every value a run or a sensor uses comes from here. No
secrets here: sources read their tokens from the environment when they connect."""

from __future__ import annotations

import dagster as dg

from rtds_pipeline.extract.ingest import limits_from
from rtds_pipeline.extract.reader import WindowLimits
from rtds_pipeline.lake.retry import StoreRetry
from rtds_pipeline.lake.storage import Lake, open_lake
from rtds_pipeline.settings import Settings
from rtds_pipeline.warehouse.store import Warehouse


class LakeResource(dg.ConfigurableResource):
    """The lake (RTDS_LAKE_URL): landing zone, commit logs, Delta tables."""

    url: str
    store_retry_seconds: float
    orphan_grace_hours: float

    @classmethod
    def from_settings(cls, settings: Settings) -> LakeResource:
        return cls(url=settings.lake_url, store_retry_seconds=settings.store_retry_seconds,
                   orphan_grace_hours=settings.orphan_grace_hours)

    def lake(self) -> Lake:
        return open_lake(self.url)

    def store_retry(self) -> StoreRetry:
        return StoreRetry(self.store_retry_seconds)


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB warehouse (RTDS_WAREHOUSE) over the lake's tables."""

    path: str
    duckdb_memory_limit: str
    hot_hours: float

    @classmethod
    def from_settings(cls, settings: Settings) -> WarehouseResource:
        return cls(path=settings.warehouse_path, duckdb_memory_limit=settings.duckdb_memory_limit,
                   hot_hours=settings.hot_hours)

    def warehouse(self, lake: Lake) -> Warehouse:
        return Warehouse(self.path, lake, memory_limit=self.duckdb_memory_limit,
                         hot_hours=self.hot_hours)


class ReaderResource(dg.ConfigurableResource):
    """How a reading run reads its source: the window limits, how long one run reads
    (RTDS_READ_RUN_SECONDS) and how long it pauses once caught up (RTDS_TICK_SECONDS)."""

    window_seconds: float
    window_max_events: int
    window_max_bytes: int
    idle_timeout: float
    max_line_bytes: int
    backoff_402_seconds: float
    run_seconds: float
    caught_up_pause_seconds: float

    @classmethod
    def from_settings(cls, settings: Settings) -> ReaderResource:
        return cls(window_seconds=settings.window_seconds,
                   window_max_events=settings.window_max_events,
                   window_max_bytes=settings.window_max_bytes, idle_timeout=settings.idle_timeout,
                   max_line_bytes=settings.max_line_bytes,
                   backoff_402_seconds=settings.backoff_402_seconds,
                   run_seconds=settings.read_run_seconds,
                   caught_up_pause_seconds=settings.tick_seconds)

    def limits(self) -> WindowLimits:
        return limits_from(self, stop_when_caught_up=True)
