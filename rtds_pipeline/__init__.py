"""Airship RTDS → Parquet landing zone → DuckDB warehouse, orchestrated by Dagster."""

from rtds_pipeline.allocator import configure_jemalloc

configure_jemalloc()  # first: jemalloc reads its options when pyarrow is imported
