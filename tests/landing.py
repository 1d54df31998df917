"""Hand-made landing windows: commit exactly the events a test describes, as the reader would."""

from __future__ import annotations

import time
from typing import Any

import duckdb
import orjson

from rtds_pipeline.lake.batch import parse_batch
from rtds_pipeline.lake.commits import Commit, CommitLog
from rtds_pipeline.lake.storage import Lake
from rtds_pipeline.lake.writer import LandingWriter
from rtds_pipeline.settings import SourceConfig
from rtds_pipeline.warehouse import events as wh
from rtds_pipeline.warehouse import marts
from rtds_pipeline.warehouse.store import Warehouse

SOURCES = (SourceConfig("events"), SourceConfig("compliance", kind="compliance"))


def event(id_: str, type_: str, occurred: str, offset: int, *, processed: str | None = None,
          **fields: Any) -> dict[str, Any]:
    """An RTDS event; offsets are given as small integers and made 13-digit."""
    return {"id": id_, "type": type_, "occurred": occurred, "processed": processed or occurred,
            "offset": f"{1_000_000_000_000 + offset}", **fields}


def commit_window(lake: Lake, source: str, events: list[dict[str, Any]],
                  garbage: bytes = b"") -> Commit:
    """Land `events` as one committed window of `source`, in the given (stream) order; `garbage`
    lines (unparseable) follow them and go to the dead letters."""
    log = CommitLog(lake, source)
    last = log.latest()
    seq = last.window_seq + 1 if last else 1
    writer = LandingWriter(lake, source, seq)
    batch = parse_batch(b"".join(orjson.dumps(e) + b"\n" for e in events) + garbage, seq, 0)
    writer.add(batch)
    files, dead = writer.finish()
    commit = Commit(source=source, window_seq=seq, resume_offset=batch.last_offset,
                    previous_offset=last.resume_offset if last else None,
                    first_offset=events[0]["offset"], files=files, dead_letter_files=dead,
                    events=batch.rows.num_rows, dead_letters=len(batch.dead), offset_updates=0,
                    keepalives=0, reconnects=0, bytes_read=0,
                    max_processed=max((e["processed"] for e in events if e.get("processed")),
                                      default=None),
                    committed_at=time.time(), stop_reason="test",
                    duplicates=writer.duplicates, late_events=writer.late)
    log.write(commit)
    return commit


def build_warehouse(tmp_path, lake, sources=SOURCES) -> duckdb.DuckDBPyConnection:
    """Build events, compliance_events and every mart from the lake, as the assets do, checking
    each mart's grain and consistency; returns a read-only connection to the published file."""
    warehouse = Warehouse(tmp_path / "wh.duckdb", lake)
    with warehouse.writer() as con:
        wh.sync_manifest(con, lake, sources)
        for kind in ("events", "compliance"):
            wh.load_pending(con, lake, kind)
            wh.fold_in_cold(con, lake, kind)  # the maintenance job's: days behind the horizon
        wh.refresh_views(con, lake)
        marts.refresh(con)
        for mart in marts.MARTS:
            assert marts.grain_duplicates(con, mart)[0] == 0, mart.name
            assert marts.violations(con, mart)[0] == 0, mart.name
    return warehouse.reader()
