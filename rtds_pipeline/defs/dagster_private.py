"""Dagster internals this project uses, in one place, each with why: none of them is exported by
`dagster`, so a Dagster upgrade that moves one breaks here, at import, not in a run.

- `SqlEventLogStorage`: the instance housekeeping (defs/instance.py) prunes the event log's tables
  with SQL; it needs to know that the storage is one of Dagster's SQL event logs.
"""

from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage

__all__ = ["SqlEventLogStorage"]
