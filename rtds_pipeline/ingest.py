"""Read one window of a source and commit it: the unit of work of the CLI and the sensor."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from rtds_pipeline.allocator import return_memory_promptly
from rtds_pipeline.lake.commits import Commit, CommitLog
from rtds_pipeline.lake.storage import Lake
from rtds_pipeline.lake.writer import LandingWriter
from rtds_pipeline.rtds.timestamps import iso_ms
from rtds_pipeline.settings import Settings, SourceConfig
from rtds_pipeline.stream.reader import WindowLimits, WindowReader, WindowStats


@dataclasses.dataclass
class WindowOutcome:
    commit: Commit | None  # None: nothing new arrived, nothing committed
    stats: WindowStats
    seconds: float


def limits_from(settings: Settings, **override: object) -> WindowLimits:
    base = WindowLimits(max_seconds=settings.window_seconds, max_events=settings.window_max_events,
                        max_bytes=settings.window_max_bytes, idle_timeout=settings.idle_timeout)
    return dataclasses.replace(base, **override)


def ingest_window(source: SourceConfig, lake: Lake, limits: WindowLimits,
                  progress: Callable[[WindowStats, float], None] | None = None) -> WindowOutcome:
    """Read one bounded window after the last commit and commit what it read.

    The offset advances only in the commit that makes the window's files visible, so a crash at
    any instant loses nothing: uncommitted files are invisible and the events are read again.
    A fatal stream error is raised after committing whatever arrived before it.
    """
    return_memory_promptly()
    t0 = time.monotonic()
    log = CommitLog(lake, source.key)
    last = log.latest()
    seq = last.window_seq + 1 if last else 1
    writer = LandingWriter(lake, source.key, seq)
    reader = WindowReader(source.endpoint(), source.request(), limits, writer.add, window_seq=seq,
                          progress=progress)
    try:
        stats = reader.read(last.resume_offset if last else None, start=source.start)
        files, dead_files = writer.finish()
    finally:
        writer.close()
    commit = None
    previous = last.resume_offset if last else None
    if files or dead_files or (stats.last_offset is not None and stats.last_offset != previous):
        commit = Commit(
            source=source.key, window_seq=seq,
            resume_offset=stats.last_offset or previous, previous_offset=previous,
            first_offset=stats.first_offset, files=files, dead_letter_files=dead_files,
            events=stats.events, dead_letters=stats.dead_letters,
            offset_updates=stats.offset_updates, keepalives=stats.keepalives,
            reconnects=stats.reconnects, bytes_read=stats.bytes,
            max_processed=iso_ms(stats.max_processed_ms) if stats.max_processed_ms else None,
            committed_at=time.time(), stop_reason=stats.stop_reason,
            duplicates=writer.duplicates, late_events=writer.late)
        log.write(commit)
    if stats.fatal is not None:
        raise stats.fatal
    return WindowOutcome(commit, stats, time.monotonic() - t0)
