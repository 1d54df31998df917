"""Read one window of a source and commit it: the unit of work of the CLI and the sensor."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import orjson

from rtds_pipeline.allocator import return_memory_promptly
from rtds_pipeline.extract.connection import StreamConnection
from rtds_pipeline.extract.errors import NoDataYet, RtdsStreamError
from rtds_pipeline.extract.reader import WindowLimits, WindowReader, WindowStats
from rtds_pipeline.lake.commits import RESET, Commit, CommitLog, write_after_compactions
from rtds_pipeline.lake.live import ORPHAN_GRACE_S, collect_orphans
from rtds_pipeline.lake.retry import StoreRetry
from rtds_pipeline.lake.storage import Lake
from rtds_pipeline.lake.writer import LandingWriter
from rtds_pipeline.protocol.events import OFFSET_UPDATE, is_offset
from rtds_pipeline.protocol.request import STARTS
from rtds_pipeline.protocol.timestamps import iso_ms, now_ms
from rtds_pipeline.settings import SourceConfig

HEAD_PROBE_S = 10.0  # how long an idle window waits for the server's OFFSET_UPDATE
NO_DATA_PAUSE_S = 5.0  # after HTTP 404 (the app has no data yet), before asking again
logger = logging.getLogger(__name__)


class StreamHeadBehind(RtdsStreamError):
    """The stream's newest offset is older than the lake's committed resume offset: the server
    lost data or is not the stream the lake was read from. Never silently "caught up"."""

    def __init__(self, source: str, head: str, resume: str) -> None:
        super().__init__(
            f"source {source!r}: the stream's newest offset {head} is behind the lake's committed "
            f"resume offset {resume}, so nothing new can ever arrive. The server lost its log or "
            "is a different stream (a restarted test server without its data/ folder, another "
            "app key). Point the source at the right stream, or move its position with "
            f"`rtds-pipeline lake reset-offset {source} --to EARLIEST|LATEST|OFFSET` (the landed "
            "data stays).")
        self.head, self.resume = head, resume


@dataclasses.dataclass
class WindowOutcome:
    commit: Commit | None  # None: nothing new arrived, nothing committed
    stats: WindowStats
    seconds: float
    # Now − newest `processed` landed, or 0 when an idle window confirmed it is at the stream's
    # head; None if unknown (nothing read and the head could not be confirmed).
    lag_s: float | None = None


class WindowSettings(Protocol):
    """What window limits are made of: `Settings`, or the Dagster resource built from it."""

    @property
    def window_seconds(self) -> float: ...
    @property
    def window_max_events(self) -> int: ...
    @property
    def window_max_bytes(self) -> int: ...
    @property
    def idle_timeout(self) -> float: ...
    @property
    def max_line_bytes(self) -> int: ...
    @property
    def backoff_402_seconds(self) -> float: ...


def limits_from(settings: WindowSettings, **override: Any) -> WindowLimits:
    base = WindowLimits(max_seconds=settings.window_seconds, max_events=settings.window_max_events,
                        max_bytes=settings.window_max_bytes, idle_timeout=settings.idle_timeout,
                        max_line_bytes=settings.max_line_bytes,
                        too_many_connections_s=settings.backoff_402_seconds)
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
    removed = collect_orphans(lake, CommitLog(lake, source), grace_s)
    with _cleaned_lock:
        _cleaned.add(key)
    return removed


def ingest_window(source: SourceConfig, lake: Lake, limits: WindowLimits,
                  progress: Callable[[WindowStats, float], None] | None = None,
                  store_retry: StoreRetry | None = None,
                  orphan_grace_s: float = ORPHAN_GRACE_S) -> WindowOutcome:
    """Read one bounded window after the last commit and commit what it read.

    The offset advances only in the commit that makes the window's files visible, so a crash at
    any instant loses nothing: uncommitted files are invisible and the events are read again.
    A fatal stream error is raised after committing whatever arrived before it. Object-store
    failures are retried for `store_retry.seconds`, then raised as `ObjectStoreUnavailable`
    with nothing committed. Another writer on the source raises `CommitConflict`, after this
    window's files are deleted.
    """
    return_memory_promptly()
    t0 = time.monotonic()
    retry = store_retry or StoreRetry()
    retry.call(f"clean up after crashed writers of {source.key}",
               lambda: clean_up_after_crashes(lake, source.key, orphan_grace_s))
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


def read_windows(source: SourceConfig, lake: Lake, limits: WindowLimits, *, seconds: float,
                 caught_up_pause_s: float, store_retry: StoreRetry | None = None,
                 orphan_grace_s: float = ORPHAN_GRACE_S, until_caught_up: bool = False,
                 progress: Callable[[WindowStats, float], None] | None = None,
                 stop: Callable[[], bool] | None = None) -> Iterator[WindowOutcome]:
    """Consecutive windows for `seconds` (the last one may end up to a window later), each
    committed before it is yielded: the unit of work of a reading run and of `ingest`. After a window that found
    the stream caught up, the next one starts `caught_up_pause_s` later (a stream at its head
    would otherwise be reconnected after every keep-alive). `until_caught_up`: stop after the
    first window that reached the stream's head; `stop()` true after a window: stop there. A 404
    (no data yet) is logged and asked again later."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            outcome = ingest_window(source, lake, limits, progress, store_retry, orphan_grace_s)
        except NoDataYet as exc:
            logger.warning("%s; asking again in %g s", exc, NO_DATA_PAUSE_S)
            pause = NO_DATA_PAUSE_S
        else:
            yield outcome
            caught_up = outcome.stats.stop_reason.startswith("caught up")
            if until_caught_up and caught_up:
                return
            pause = caught_up_pause_s if caught_up else 0.0
        left = deadline - time.monotonic()
        if left <= pause or (stop is not None and stop()):
            return
        time.sleep(pause)


def publish(log: CommitLog, commit: Commit, retry: StoreRetry) -> None:
    """Write the commit, retrying object-store failures. A retried PUT may have landed before
    its answer was lost: finding exactly this commit there is success."""
    attempts = 0

    def write() -> None:
        nonlocal attempts
        attempts += 1
        write_after_compactions(log, commit, retried=attempts > 1)

    retry.call(f"write commit {commit.window_seq} of {commit.source}", write)


RESET_REASON = "reset-offset to "


def reset_commit(log: CommitLog, to: str) -> Commit:
    """A commit that lists no files and moves the source's position: after `to` (an offset of
    RTDS's form), or to the start of the stream (EARLIEST) or its end (LATEST). Commits only
    ever add to the log, so the move is recorded and can be undone by another reset."""
    last = log.latest()
    start = to if to in STARTS else None
    if start is None and not is_offset(to):
        raise ValueError(f"--to must be EARLIEST, LATEST or an offset of RTDS's form "
                         f"(1 to 19 digits), got {to!r}")
    return Commit(
        source=log.source, window_seq=last.window_seq + 1 if last else 1,
        resume_offset=None if start else to, previous_offset=last.resume_offset if last else None,
        first_offset=None, files=[], dead_letter_files=[], events=0, dead_letters=0,
        offset_updates=0, keepalives=0, reconnects=0, bytes_read=0, max_processed=None,
        committed_at=time.time(), stop_reason=RESET_REASON + to, kind=RESET)


def reset_start(last: Commit | None) -> str | None:
    """EARLIEST or LATEST when the last commit is a reset to the start or end of the stream."""
    if last is not None and last.resume_offset is None and last.stop_reason.startswith(RESET_REASON):
        start = last.stop_reason[len(RESET_REASON):].split(":", 1)[0]
        return start if start in STARTS else None
    return None


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
    except RtdsStreamError:
        return None
    finally:
        conn.close()
    return None
