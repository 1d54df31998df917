"""One bounded window of the stream.

Stops at whichever comes first: max seconds, max events, max bytes, or "caught up" (a keep-alive
arrived, or `processed` reached the window's start time). Reconnects inside the window from the
last received offset with jittered exponential back-off, dropping a replayed boundary event.
Python touches chunks, never single events: complete lines are cut at the last b"\\n" of each
chunk and handed, in batches of `batch_bytes`, to the parser and the landing writer, which run
on a worker thread (one batch in flight) while the next batch is received.
"""

from __future__ import annotations

import dataclasses
import random
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait

import pyarrow.compute as pc

from rtds_pipeline.lake.batch import ParsedBatch, parse_batch, strip_blank_lines
from rtds_pipeline.rtds.request import StreamRequest
from rtds_pipeline.stream.connection import Endpoint, StreamConnection
from rtds_pipeline.stream.errors import ConnectionLost, StreamError, TooManyConnections

MIN_EVENT_BYTES = 64  # no RTDS event line is shorter (id, type, offset and two timestamps)


@dataclasses.dataclass(frozen=True)
class WindowLimits:
    max_seconds: float = 40.0
    max_events: int = 2_000_000
    max_bytes: int = 2 << 30
    stop_when_caught_up: bool = True
    idle_timeout: float = 90.0
    batch_bytes: int = 8 << 20


@dataclasses.dataclass(frozen=True)
class Backoff:
    """Jittered exponential back-off; 402 waits at least `too_many_connections_s`."""

    base_s: float = 0.5
    cap_s: float = 30.0
    too_many_connections_s: float = 30.0

    def delay(self, attempt: int, error: StreamError) -> float:
        d = min(self.cap_s, self.base_s * 2 ** attempt) * random.uniform(0.5, 1.0)
        if isinstance(error, TooManyConnections):
            d = max(d, self.too_many_connections_s)
        return d


@dataclasses.dataclass
class WindowStats:
    events: int = 0
    lines: int = 0
    bytes: int = 0
    dead_letters: int = 0
    offset_updates: int = 0
    keepalives: int = 0
    reconnects: int = 0
    replayed_dropped: int = 0
    first_offset: str | None = None
    last_offset: str | None = None
    max_processed_ms: int | None = None
    stop_reason: str = ""
    errors: list[str] = dataclasses.field(default_factory=list)
    fatal: StreamError | None = None


class WindowReader:
    def __init__(self, endpoint: Endpoint, request: StreamRequest, limits: WindowLimits,
                 on_batch: Callable[[ParsedBatch], None], backoff: Backoff | None = None,
                 window_seq: int = 0,
                 progress: Callable[[WindowStats, float], None] | None = None) -> None:
        self.endpoint, self.request, self.limits = endpoint, request, limits
        self.on_batch = on_batch
        self.backoff = backoff or Backoff()
        self.window_seq = window_seq
        self.progress = progress  # called about once a second with (stats, seconds elapsed)

    def read(self, resume_offset: str | None, start: str = "EARLIEST") -> WindowStats:
        # Parsing and landing run on one worker thread while this one keeps receiving and
        # decompressing (both release the GIL in C): the two cores overlap.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="rtds-window") as worker:
            return self._read(worker, resume_offset, start)

    def _read(self, worker: ThreadPoolExecutor, resume_offset: str | None,
              start: str) -> WindowStats:
        lim, stats = self.limits, WindowStats()
        t0 = time.monotonic()
        deadline = t0 + lim.max_seconds
        window_start_ms = time.time_ns() // 1_000_000
        position = resume_offset
        attempt = 0
        pos_counter = 0
        next_progress = t0 + 1.0
        in_flight: list[Future[None]] = []  # at most one batch on the worker

        def drain() -> None:
            while in_flight:
                in_flight.pop(0).result()  # re-raises what failed on the worker

        while True:
            skip_offset = position  # a server replaying the resume point: drop that event
            req = (self.request.resumed_at(position) if position is not None
                   else dataclasses.replace(self.request, start=start))
            remaining = deadline - time.monotonic()
            conn = StreamConnection(self.endpoint, req, idle_timeout=min(lim.idle_timeout, max(remaining, 0.5)))
            buf: list[bytes] = []
            buffered = 0
            buffered_lines = 0
            buffered_blanks = 0
            ended_with_newline = True

            def parse_and_hand_over(data: bytes) -> None:
                """Runs on the window's one worker thread, batches strictly in order."""
                nonlocal position, pos_counter, skip_offset
                batch = parse_batch(data, self.window_seq, pos_counter)
                pos_counter += batch.lines
                if skip_offset is not None and batch.rows.num_rows:
                    if batch.rows.column("rtds_offset")[0].as_py() == skip_offset:
                        batch.rows = batch.rows.slice(1)
                        stats.replayed_dropped += 1
                    skip_offset = None
                if batch.rows.num_rows:
                    if stats.first_offset is None:
                        stats.first_offset = batch.rows.column("rtds_offset")[0].as_py()
                    mp = pc.max(batch.rows.column("processed")).value
                    if mp is not None:
                        stats.max_processed_ms = max(stats.max_processed_ms or mp, mp)
                stats.events += batch.rows.num_rows
                stats.dead_letters += len(batch.dead)
                stats.offset_updates += batch.offset_updates
                stats.lines += batch.lines
                if batch.last_offset is not None:
                    position = batch.last_offset
                    stats.last_offset = position
                self.on_batch(batch)

            def process() -> None:
                """Hand the buffered lines to the worker; receiving goes on meanwhile. At most
                one batch is in flight, so memory stays at two batches."""
                nonlocal buf, buffered, buffered_lines, buffered_blanks
                drain()
                if not buf:
                    return
                data = strip_blank_lines(b"".join(buf))
                buf, buffered, buffered_lines, buffered_blanks = [], 0, 0, 0
                in_flight.append(worker.submit(parse_and_hand_over, data))

            def settle() -> None:
                """Process what is buffered and wait for it: stats and position are exact after."""
                process()
                drain()

            try:
                pending = b""
                healthy = False
                for chunk in conn.chunks():
                    stats.bytes += len(chunk)
                    data = pending + chunk if pending else chunk
                    cut = data.rfind(b"\n") + 1
                    complete, pending = data[:cut], data[cut:]
                    if complete:
                        blanks = complete.count(b"\n\n") + (complete[0] == 10 and ended_with_newline)
                        ended_with_newline = True
                        stats.keepalives += blanks
                        buf.append(complete)
                        buffered += len(complete)
                        # Lines are counted only near max_events (no event is shorter than
                        # MIN_EVENT_BYTES): a second full scan of every chunk costs ~10 %.
                        buffered_blanks += blanks
                        if stats.events + buffered // MIN_EVENT_BYTES >= lim.max_events:
                            buffered_lines = sum(b.count(b"\n") for b in buf) - buffered_blanks
                        if blanks:
                            healthy = True
                    elif pending:
                        ended_with_newline = False
                    if buffered >= lim.batch_bytes:
                        process()
                        healthy = True
                        if (lim.stop_when_caught_up and stats.max_processed_ms is not None
                                and stats.max_processed_ms >= window_start_ms):
                            return self._stop(stats, "caught up (processed reached window start)", settle)
                    if healthy:
                        attempt = 0
                    if self.progress is not None and time.monotonic() >= next_progress:
                        next_progress = time.monotonic() + 1.0
                        self.progress(stats, time.monotonic() - t0)
                    if stats.keepalives and lim.stop_when_caught_up:
                        return self._stop(stats, "caught up (keep-alive)", settle)
                    if buffered_lines and stats.events + buffered_lines >= lim.max_events:
                        settle()
                    if stats.events >= lim.max_events:
                        return self._stop(stats, "max events", settle)
                    if stats.bytes >= lim.max_bytes:
                        return self._stop(stats, "max bytes", settle)
                    if time.monotonic() >= deadline:
                        return self._stop(stats, "max seconds", settle)
                raise ConnectionLost("server closed the stream")
            except StreamError as exc:
                settle()  # what arrived complete is kept; a cut line is re-read after reconnect
                if not exc.retryable:
                    stats.fatal = exc
                    stats.stop_reason = f"error: {type(exc).__name__}"
                    return stats
                stats.errors.append(str(exc))
                delay = self.backoff.delay(attempt, exc)
                attempt += 1
                if time.monotonic() + delay >= deadline:
                    stats.stop_reason = f"max seconds (last error: {type(exc).__name__})"
                    if stats.events == 0 and isinstance(exc, TooManyConnections):
                        stats.fatal = exc
                    return stats
                stats.reconnects += 1
                time.sleep(delay)
            finally:
                conn.close()
                if sys.exc_info()[0] is not None:
                    for job in in_flight:  # an unexpected error: do not leave work running
                        job.cancel()
                    wait(in_flight)

    @staticmethod
    def _stop(stats: WindowStats, reason: str, settle: Callable[[], None]) -> WindowStats:
        settle()
        stats.stop_reason = reason
        return stats
