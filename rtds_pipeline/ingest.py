"""Read one window of a source and commit it: the unit of work of the CLI and the sensor."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable

import orjson

from rtds_pipeline.allocator import return_memory_promptly
from rtds_pipeline.lake.commits import COMPACTION, Commit, CommitConflict, CommitLog
from rtds_pipeline.lake.live import ORPHAN_GRACE_S, collect_orphans
from rtds_pipeline.lake.storage import Lake
from rtds_pipeline.lake.writer import LandingWriter
from rtds_pipeline.rtds.events import OFFSET_UPDATE
from rtds_pipeline.rtds.timestamps import iso_ms, now_ms
from rtds_pipeline.settings import Settings, SourceConfig
from rtds_pipeline.stream.connection import StreamConnection
from rtds_pipeline.stream.errors import StreamError
from rtds_pipeline.stream.reader import WindowLimits, WindowReader, WindowStats

HEAD_PROBE_S = 10.0  # how long an idle window waits for the server's OFFSET_UPDATE


class StreamHeadBehind(StreamError):
    """The stream's newest offset is older than the lake's committed resume offset: the server
    lost data or is not the stream the lake was read from. Never silently "caught up"."""

    def __init__(self, source: str, head: str, resume: str) -> None:
        super().__init__(
            f"source {source!r}: the stream's newest offset {head} is behind the lake's committed "
            f"resume offset {resume}, so nothing new can ever arrive. The server lost its log or "
            "is a different stream (a restarted test server without its data/ folder, another "
            "app key). Point the source at the right stream, or start it over with "
            f"`rtds-pipeline lake reset --source {source}` (the landed data stays).")
        self.head, self.resume = head, resume


@dataclasses.dataclass
class WindowOutcome:
    commit: Commit | None  # None: nothing new arrived, nothing committed
    stats: WindowStats
    seconds: float
    # Now − newest `processed` landed, or 0 when an idle window confirmed it is at the stream's
    # head; None if unknown (nothing read and the head could not be confirmed).
    lag_s: float | None = None


def limits_from(settings: Settings, **override: object) -> WindowLimits:
    base = WindowLimits(max_seconds=settings.window_seconds, max_events=settings.window_max_events,
                        max_bytes=settings.window_max_bytes, idle_timeout=settings.idle_timeout)
    return dataclasses.replace(base, **override)


_cleaned: set[tuple[str, str]] = set()
_cleaned_lock = threading.Lock()


def clean_up_after_crashes(lake: Lake, source: str, grace_s: float = ORPHAN_GRACE_S) -> list[str]:
    """Once per process and source, when a writer starts: delete files a crashed writer left
    (unlisted, older than the grace period, so a window in flight elsewhere is spared)."""
    key = (lake.url, source)
    with _cleaned_lock:
        if key in _cleaned:
            return []
        _cleaned.add(key)
    return collect_orphans(lake, CommitLog(lake, source), grace_s)


def ingest_window(source: SourceConfig, lake: Lake, limits: WindowLimits,
                  progress: Callable[[WindowStats, float], None] | None = None,
                  orphan_grace_s: float = ORPHAN_GRACE_S) -> WindowOutcome:
    """Read one bounded window after the last commit and commit what it read.

    The offset advances only in the commit that makes the window's files visible, so a crash at
    any instant loses nothing: uncommitted files are invisible and the events are read again.
    A fatal stream error is raised after committing whatever arrived before it. Another writer
    on the source raises `CommitConflict`, after this window's files are deleted.
    """
    return_memory_promptly()
    t0 = time.monotonic()
    clean_up_after_crashes(lake, source.key, orphan_grace_s)
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
        _commit_window(log, commit)
    if stats.fatal is not None:
        raise stats.fatal
    caught_up = stats.stop_reason.startswith("caught up")
    lag_s = (now_ms() - stats.max_processed_ms) / 1000 if stats.max_processed_ms else None
    if caught_up and stats.events:
        lag_s = 0.0  # the server had nothing more: at its head
    elif caught_up and previous is not None:
        # Nothing at all arrived: the stream is idle, or its head is behind our offset and
        # nothing can ever arrive. Only the server's OFFSET_UPDATE tells the two apart.
        head = stream_head(source, previous, min(limits.idle_timeout, HEAD_PROBE_S))
        if head is not None and offset_before(head, previous):
            raise StreamHeadBehind(source.key, head, previous)
        lag_s = 0.0 if head is not None else None
    return WindowOutcome(commit, stats, time.monotonic() - t0, lag_s)


def _commit_window(log: CommitLog, commit: Commit) -> None:
    """Commit at `commit.window_seq`; if a compaction record took that number meanwhile (it
    moves no offset), at the next free one. The rows keep the sequence they were read as, which
    still orders them after every earlier window. Any other winner is a second writer: this
    window's files are deleted and `CommitConflict` raised."""
    while True:
        try:
            log.write(commit, discard_on_conflict=False)
            return
        except CommitConflict:
            taken = log.since(commit.window_seq - 1)
            if not taken or any(c.kind != COMPACTION for c in taken):
                log.discard(commit)
                raise
            commit.window_seq = taken[-1].window_seq + 1


def offset_before(a: str, b: str) -> bool:
    """True if offset `a` is certainly older than `b`. Offsets are opaque strings; Airship's are
    decimal numbers, which compare as numbers (anything else: not comparable, so False)."""
    return a.isdigit() and b.isdigit() and int(a) < int(b)


def stream_head(source: SourceConfig, resume_offset: str, timeout_s: float) -> str | None:
    """Ask the stream where its head is: resume after `resume_offset` with offset updates on.
    An event means the head is ahead (returns `resume_offset`); an idle OFFSET_UPDATE carries
    the offset of the last event the server has considered. None if neither came in time."""
    request = dataclasses.replace(source.request().resumed_at(resume_offset),
                                  enable_offset_updates=True)
    conn = StreamConnection(source.endpoint(), request, idle_timeout=timeout_s)
    deadline = time.monotonic() + timeout_s
    pending = b""
    try:
        for chunk in conn.chunks():
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if not line.strip():
                    continue
                try:
                    event = orjson.loads(line)
                except orjson.JSONDecodeError:
                    return resume_offset
                if event.get("type") == OFFSET_UPDATE and event.get("offset"):
                    return str(event["offset"])
                return resume_offset  # a real event after the resume point: not behind
            if time.monotonic() > deadline:
                return None
    except StreamError:
        return None
    finally:
        conn.close()
    return None
