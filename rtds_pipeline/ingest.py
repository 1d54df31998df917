"""Read one window of a source and commit it: the unit of work of the CLI and the sensor."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from rtds_pipeline.allocator import return_memory_promptly
from rtds_pipeline.lake.commits import Commit, CommitLog
from rtds_pipeline.lake.retry import StoreRetry
from rtds_pipeline.lake.storage import Lake
from rtds_pipeline.lake.writer import LandingWriter
from rtds_pipeline.rtds.events import is_offset
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
                        max_bytes=settings.window_max_bytes, idle_timeout=settings.idle_timeout,
                        max_line_bytes=settings.max_line_bytes,
                        too_many_connections_s=settings.backoff_402_seconds)
    return dataclasses.replace(base, **override)


def ingest_window(source: SourceConfig, lake: Lake, limits: WindowLimits,
                  progress: Callable[[WindowStats, float], None] | None = None,
                  store_retry: StoreRetry | None = None) -> WindowOutcome:
    """Read one bounded window after the last commit and commit what it read.

    The offset advances only in the commit that makes the window's files visible, so a crash at
    any instant loses nothing: uncommitted files are invisible and the events are read again.
    A fatal stream error is raised after committing whatever arrived before it. Object-store
    failures are retried for `store_retry.seconds`, then raised as `ObjectStoreUnavailable`
    with nothing committed.
    """
    return_memory_promptly()
    t0 = time.monotonic()
    retry = store_retry or StoreRetry()
    log = CommitLog(lake, source.key)
    last = retry.call(f"read the commit log of {source.key}", log.latest)
    seq = last.window_seq + 1 if last else 1
    writer = LandingWriter(lake, source.key, seq, retry=retry)
    reader = WindowReader(source.endpoint(), source.request(), limits, writer.add, window_seq=seq,
                          progress=progress)
    try:
        stats = reader.read(last.resume_offset if last else None,
                            start=reset_start(last) or source.start)
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
            committed_at=time.time(),
            # A window after a reset to EARLIEST/LATEST that brought no offset keeps the reset.
            stop_reason=(RESET_REASON + start + ": " if stats.last_offset is None
                         and (start := reset_start(last)) else "") + stats.stop_reason,
            duplicates=writer.duplicates, late_events=writer.late)
        publish(log, commit, retry)
    if stats.fatal is not None:
        raise stats.fatal
    return WindowOutcome(commit, stats, time.monotonic() - t0)


def publish(log: CommitLog, commit: Commit, retry: StoreRetry) -> None:
    """Write the commit, retrying object-store failures. A retried PUT may have landed before
    its answer was lost: finding exactly this commit there is success."""
    attempts = 0

    def write() -> None:
        nonlocal attempts
        attempts += 1
        try:
            log.write(commit)
        except FileExistsError:
            if attempts == 1 or log.read(commit.window_seq) != commit:
                raise

    retry.call(f"write commit {commit.window_seq} of {commit.source}", write)


RESET_REASON = "reset-offset to "


def reset_commit(log: CommitLog, to: str) -> Commit:
    """A commit that lists no files and moves the source's position: after `to` (an offset of
    RTDS's form), or to the start of the stream (EARLIEST) or its end (LATEST). Commits only
    ever add to the log, so the move is recorded and can be undone by another reset."""
    last = log.latest()
    start = to if to in ("EARLIEST", "LATEST") else None
    if start is None and not is_offset(to):
        raise ValueError(f"--to must be EARLIEST, LATEST or an offset of RTDS's form "
                         f"(1 to 19 digits), got {to!r}")
    return Commit(
        source=log.source, window_seq=last.window_seq + 1 if last else 1,
        resume_offset=None if start else to, previous_offset=last.resume_offset if last else None,
        first_offset=None, files=[], dead_letter_files=[], events=0, dead_letters=0,
        offset_updates=0, keepalives=0, reconnects=0, bytes_read=0, max_processed=None,
        committed_at=time.time(), stop_reason=RESET_REASON + to)


def reset_start(last: Commit | None) -> str | None:
    """EARLIEST or LATEST when the last commit is a reset to the start or end of the stream."""
    if last is not None and last.resume_offset is None and last.stop_reason.startswith(RESET_REASON):
        start = last.stop_reason[len(RESET_REASON):].split(":", 1)[0]
        return start if start in ("EARLIEST", "LATEST") else None
    return None
