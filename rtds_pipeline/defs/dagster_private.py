"""The only imports of Dagster's private modules (`dagster._…`), kept here so that an upgrade
that moves them breaks one place.

Why private: Dagster 1.13 has no public way to say these run tags, though it reads them:
- a single run over a range of partitions (what the UI's "materialize partition range" and
  `dagster asset materialize --partition-range` send): `RunRequest` has `partition_key` but no
  range argument; its own `partition_key_range` property reads these two tags;
- the per-run maximum runtime that run monitoring enforces (documented as the run tag
  `dagster/max_runtime_seconds`).
And the type `define_asset_job` returns, which `dagster` does not export (for type hints only),
and `SqlEventLogStorage`: the instance housekeeping (defs/instance.py) prunes the event log's
tables with SQL, so it must know that the storage is one of Dagster's SQL event logs.
"""

from dagster._core.definitions.unresolved_asset_job_definition import (
    UnresolvedAssetJobDefinition,
)
from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    MAX_RUNTIME_SECONDS_TAG,
)

__all__ = ["ASSET_PARTITION_RANGE_END_TAG", "ASSET_PARTITION_RANGE_START_TAG",
           "MAX_RUNTIME_SECONDS_TAG", "SqlEventLogStorage", "UnresolvedAssetJobDefinition"]


def partition_range_tags(first: str, last: str) -> dict[str, str]:
    """Run tags asking for one run over the partitions `first` … `last`."""
    return {ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last}
