"""The one Dagster resource: where the lake and the warehouse are (from the same Settings the
CLI uses). No secrets here: sources read their tokens from the environment when they connect."""

import dagster as dg

from rtds_pipeline.lake.storage import Lake, open_lake
from rtds_pipeline.settings import DUCKDB_MEMORY_LIMIT
from rtds_pipeline.warehouse.store import Warehouse


class RtdsResource(dg.ConfigurableResource):
    lake_url: str
    warehouse_path: str
    duckdb_memory_limit: str = DUCKDB_MEMORY_LIMIT

    def lake(self) -> Lake:
        return open_lake(self.lake_url)

    def warehouse(self) -> Warehouse:
        return Warehouse(self.warehouse_path, self.lake(), memory_limit=self.duckdb_memory_limit)
