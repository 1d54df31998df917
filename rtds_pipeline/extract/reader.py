"""One bounded window of the stream.

Stops at whichever comes first: max seconds, max events, max bytes, or "caught up" (a keep-alive
arrived, or `processed` reached the window's start time). Reconnects inside the window from the
last received offset with jittered exponential back-off, dropping a replayed boundary event.
Python touches chunks, never single events: decompressed chunks are joined into batches of
`batch_bytes`, cut after their last b"\\n", and handed to a pipeline — parse on one thread, then
place (positions, offsets, stats) and land on another, strictly in stream order — while the next
batch is received. All three spend their time in C code that releases the GIL (ISA-L's inflate,
Arrow's JSON reader, the Parquet writer), so they share the cores.

Whatever a server sends, memory stays bounded: a line longer than `max_line_bytes` is dropped as
it arrives and dead-lettered (prefix + length). A 402 is waited out (≥ 30 s), across windows
when it outlasts one; errors that retrying cannot fix end the window (`RtdsStreamError.retryable`).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import logging
import random
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeAlias

import pyarrow as pa
import pyarrow.compute as pc

from rtds_pipeline.extract.connection import Endpoint, StreamConnection
from rtds_pipeline.extract.errors import (
    ConnectionLost,
    RtdsStreamError,
    ServerError,
    TooManyConnections,
)
from rtds_pipeline.lake.batch import LANDING_SCHEMA, DeadLetter, ParsedBatch, parse_batch
from rtds_pipeline.protocol.request import StreamRequest
from rtds_pipeline.settings import (
    BACKOFF_402_SECONDS,
    IDLE_TIMEOUT,
    MAX_LINE_BYTES,
    START,
    WINDOW_MAX_BYTES,
    WINDOW_MAX_EVENTS,
    WINDOW_SECONDS,
)

MIN_EVENT_BYTES = 64  # no RTDS event line is shorter (id, type, offset and two timestamps)
DEAD_PREFIX_BYTES = 4096  # what a dead letter keeps of an overlong line
# Under Dagster, `python_logs.managed_python_loggers: [rtds_pipeline]` puts these in run logs.
logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class WindowLimits:
    max_seconds: float = WINDOW_SECONDS
    max_events: int = WINDOW_MAX_EVENTS
    max_bytes: int = WINDOW_MAX_BYTES
    stop_when_caught_up: bool = True
    idle_timeout: float = IDLE_TIMEOUT
    # Under 7 MiB with a chunk's overshoot: jemalloc hands allocations of its 8 MiB size class
    # and up straight back to the OS whatever the decay, so every 8 MB batch (and its `raw` copy)
    # was faulted in afresh: 1.08 M page faults a 2M-event window, 0.71 M at 6 MiB.
    batch_bytes: int = 6 << 20
    max_line_bytes: int = MAX_LINE_BYTES
    too_many_connections_s: float = BACKOFF_402_SECONDS  # tests lower it; keep ≥ 30 s


@dataclasses.dataclass(frozen=True)
class Backoff:
    """Jittered exponential back-off; 402 waits at least `too_many_connections_s`."""

    base_s: float = 0.5
    cap_s: float = 30.0
    too_many_connections_s: float = BACKOFF_402_SECONDS

    def delay(self, attempt: int, error: RtdsStreamError) -> float:
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
    backoff_seconds: float = 0.0  # waited before reconnecting
    server_errors: int = 0  # HTTP 5xx and 402 answers
    replayed_dropped: int = 0
    first_offset: str | None = None
    last_offset: str | None = None
    max_processed_ms: int | None = None
    stop_reason: str = ""
    errors: list[str] = dataclasses.field(default_factory=list)
    fatal: RtdsStreamError | None = None

    def retrying(self, error: RtdsStreamError, delay: float, where: str) -> None:
        """Count and log one retried error and the back-off before the next attempt."""
        self.errors.append(str(error))
        self.backoff_seconds += delay
        if isinstance(error, ServerError | TooManyConnections):
            self.server_errors += 1
        logger.warning("%s: %s; reconnecting in %.1f s (resuming after offset %s)",
                       where, error, delay, self.last_offset)


# What the reader hands to the pipeline, in stream order: complete lines to parse, or a batch
# made without parsing (an overlong line's dead letter).
Handover: TypeAlias = pa.Buffer | ParsedBatch


class WindowState:
    """One window's state: what was received and placed, where the stream stands, and what to do
    next (hand lines over, settle, stop). No I/O and no threads, so it is tested on synthetic
    chunks; `WindowReader` feeds it a connection's chunks and runs the hand-overs it returns.

    `place` runs on the landing thread, every other method on the reading thread: the counters
    the reading thread reads are exact after the pipeline settled, a lower bound before."""

    def __init__(self, limits: WindowLimits, resume_offset: str | None, *, deadline: float,
                 window_start_ms: int) -> None:
        self.limits = limits
        self.stats = WindowStats()
        self.position = resume_offset  # the last offset placed: where a reconnect resumes
        self.deadline = deadline  # time.monotonic() at which the window stops
        self.window_start_ms = window_start_ms  # `processed` at or past it: caught up
        self._placed_lines = 0  # line positions handed out so far
        self.connect()

    def connect(self) -> None:
        """A new connection from `position`; the server may replay that event first."""
        self._skip_offset = self.position
        self.lines = _LineBuffer(self.limits.max_line_bytes)
        self._buffered_lines = 0  # upper bound of buffered lines, counted only near max_events
        self._ended_with_newline = True
        self._idle = False  # a keep-alive ended a chunk: the server has nothing more right now
        self._batch_handed = False  # the last chunk completed a batch
        self.healthy = False  # data flows on this connection: retries start over

    def receive(self, chunk: bytes) -> list[Handover]:
        """Account for one received chunk; what to hand to the pipeline now, in order."""
        lim, lines, out = self.limits, self.lines, []
        self.stats.bytes += len(chunk)
        self._batch_handed = False
        if lines.skipping:
            chunk, ended = lines.skip(chunk)
            if ended is not None:
                out.append(ended)
        if chunk:
            # A keep-alive (blank line) sent while idle ends its chunk; one may straddle two
            # chunks. Found without scanning the chunk: the parser counts them all.
            self._idle = chunk.endswith(b"\n\n") or (chunk[0] == 10 and self._ended_with_newline)
            self._ended_with_newline = chunk[-1] == 10
            lines.append(chunk)
            if self._idle:
                self.healthy = True
            if lines.tail > lim.max_line_bytes:
                out.extend(self.take())  # the complete lines ahead of it, then drop it as it comes
                lines.start_skipping()
        # Lines are counted only near max_events (no event is shorter than MIN_EVENT_BYTES): a
        # second full scan of every chunk costs ~10 %.
        if self.stats.events + lines.size // MIN_EVENT_BYTES >= lim.max_events:
            self._buffered_lines = lines.count_newlines()  # blanks too: an upper bound
        if lines.size >= lim.batch_bytes and lines.has_complete:
            out.extend(self.take())
            self._batch_handed = self.healthy = True
        return out

    def take(self) -> list[Handover]:
        """The buffered complete lines, if any; the cut line after them stays."""
        data = self.lines.take_complete()
        self._buffered_lines = 0
        return [] if data is None else [data]

    def drain(self) -> list[Handover]:
        """Everything left when the window stops: the complete lines, and the dead letter of an
        overlong line still running (the next window reads on after it)."""
        out = self.take()
        if self.lines.skipping:
            out.append(self.lines.dead_letter(terminated=False))
        return out

    def caught_up(self) -> str | None:
        """Why the window stops as caught up with the stream, or None."""
        if not self.limits.stop_when_caught_up:
            return None
        mp = self.stats.max_processed_ms
        if self._batch_handed and mp is not None and mp >= self.window_start_ms:
            return "caught up (processed reached window start)"
        if self._idle or self.stats.keepalives:
            return "caught up (keep-alive)"
        return None

    def must_settle(self) -> bool:
        """The buffered lines may reach max_events: settle to count exactly before going on."""
        return bool(self._buffered_lines) and (
            self.stats.events + self._buffered_lines >= self.limits.max_events)

    def limit_reached(self, now: float) -> str | None:
        """Which bound of the window is reached at monotonic time `now`, or None."""
        if self.stats.events >= self.limits.max_events:
            return "max events"
        if self.stats.bytes >= self.limits.max_bytes:
            return "max bytes"
        if now >= self.deadline:
            return "max seconds"
        return None

    def place(self, batch: ParsedBatch) -> None:
        """Account for a parsed batch, in stream order (on the landing thread): line positions,
        the replayed resume event dropped, counters, and the position moved on."""
        stats = self.stats
        batch.shift_positions(self._placed_lines)
        self._placed_lines += batch.lines
        if self._skip_offset is not None and batch.rows.num_rows:
            if batch.rows.column("rtds_offset")[0].as_py() == self._skip_offset:
                batch.rows = batch.rows.slice(1)
                stats.replayed_dropped += 1
            self._skip_offset = None
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
        stats.keepalives += batch.keepalives
        if batch.last_offset is not None:
            self.position = stats.last_offset = batch.last_offset


class WindowReader:
    def __init__(self, endpoint: Endpoint, request: StreamRequest, limits: WindowLimits,
                 on_batch: Callable[[ParsedBatch], None], backoff: Backoff | None = None,
                 window_seq: int = 0,
                 progress: Callable[[WindowStats, float], None] | None = None) -> None:
        self.endpoint, self.request, self.limits = endpoint, request, limits
        self.on_batch = on_batch
        self.backoff = backoff or Backoff(too_many_connections_s=limits.too_many_connections_s)
        self.window_seq = window_seq
        self.progress = progress  # called about once a second with (stats, seconds elapsed)

    def read(self, resume_offset: str | None, start: str = START) -> WindowStats:
        with _Pipeline(functools.partial(parse_batch, window_seq=self.window_seq)) as pipeline:
            return self._read(pipeline, resume_offset, start)

    def _read(self, pipeline: _Pipeline, resume_offset: str | None, start: str) -> WindowStats:
        t0 = time.monotonic()
        window = WindowState(self.limits, resume_offset, deadline=t0 + self.limits.max_seconds,
                             window_start_ms=time.time_ns() // 1_000_000)
        stats, deadline = window.stats, window.deadline
        attempt = 0
        next_progress = t0 + 1.0
        if self._wait_out_backoff(deadline):
            stats.stop_reason = "backing off (HTTP 402: too many connections)"
            return stats

        def land(batch: ParsedBatch) -> None:
            """Runs on the landing thread, batches strictly in stream order."""
            window.place(batch)
            self.on_batch(batch)

        def hand_over(items: list[Handover]) -> None:
            for item in items:
                if isinstance(item, ParsedBatch):
                    pipeline.submit_parsed(item, land)
                else:
                    pipeline.submit(item, land)  # blank lines are counted and dropped there

        def stop(reason: str) -> WindowStats:
            hand_over(window.drain())
            pipeline.settle()
            stats.stop_reason = reason
            return stats

        while True:
            req = (self.request.resumed_at(window.position) if window.position is not None
                   else dataclasses.replace(self.request, start=start))
            remaining = deadline - time.monotonic()
            conn = StreamConnection(self.endpoint, req,
                                    idle_timeout=min(self.limits.idle_timeout, max(remaining, 0.5)))
            window.connect()
            try:
                for chunk in conn.chunks():
                    hand_over(window.receive(chunk))
                    if window.healthy:
                        attempt = 0
                    if self.progress is not None and time.monotonic() >= next_progress:
                        next_progress = time.monotonic() + 1.0
                        self.progress(stats, time.monotonic() - t0)
                    reason = window.caught_up()
                    if reason is None and window.must_settle():
                        hand_over(window.take())
                        pipeline.settle()  # the counts are exact now
                    reason = reason or window.limit_reached(time.monotonic())
                    if reason is not None:
                        return stop(reason)
                raise ConnectionLost("server closed the stream")
            except RtdsStreamError as exc:
                # What arrived complete is kept; a cut line (overlong or not) is re-read after
                # reconnecting, from the last offset.
                hand_over(window.take())
                pipeline.settle()
                if not exc.retryable:
                    stats.fatal = exc
                    stats.stop_reason = f"error: {type(exc).__name__}"
                    return stats
                delay = self.backoff.delay(attempt, exc)
                stats.retrying(exc, delay, self.endpoint.url)
                attempt += 1
                if isinstance(exc, TooManyConnections):
                    # The slot is held elsewhere: wait it out, across windows if need be; the
                    # source goes on once the slot is free (never a failed window or tick).
                    _NOT_BEFORE[self._backoff_key] = time.time() + delay
                    if self._wait_out_backoff(deadline):
                        stats.stop_reason = f"backing off {delay:.0f} s after HTTP 402 (too many connections)"
                        return stats
                    stats.reconnects += 1
                    continue
                if time.monotonic() + delay >= deadline:
                    stats.stop_reason = f"max seconds (last error: {type(exc).__name__})"
                    return stats
                stats.reconnects += 1
                time.sleep(delay)
            finally:
                conn.close()

    @property
    def _backoff_key(self) -> str:
        e = self.endpoint
        return f"{e.url} {e.app_key} {self.request.subset}"

    def _wait_out_backoff(self, deadline: float) -> bool:
        """Sleep through a 402 back-off still running for this stream (this window's or an
        earlier one's in this process), at most until `deadline`; True if it outlasts it."""
        wait = _NOT_BEFORE.get(self._backoff_key, 0.0) - time.time()
        if wait <= 0:
            return False
        remaining = deadline - time.monotonic()
        logger.info("%s: waiting %.0f s more before connecting (HTTP 402 back-off)",
                    self.endpoint.url, wait)
        time.sleep(max(0.0, min(wait, remaining)))
        return wait >= remaining


# When each stream (URL, app, subset) may connect again after a 402, in wall-clock seconds: a
# back-off of at least 30 s outlasts short windows, so the next window in this process waits out
# the rest. A window that waits to its end is an ordinary, empty window: under `ingest --follow`
# and Dagster ticks the source goes on once the slot is free.
_NOT_BEFORE: dict[str, float] = {}


class _LineBuffer:
    """Received chunks until they are handed over as complete lines.

    The last b"\n" is tracked as chunks arrive (each chunk is searched once, from its end), so a
    hand-over never rescans what it scanned before. A line that grows past `max_line` bytes is
    not buffered: its first DEAD_PREFIX_BYTES are kept and the rest only counted until its
    b"\n", then it becomes a dead letter (prefix + length). Memory stays within a batch plus one
    maximum line, whatever a server sends."""

    def __init__(self, max_line: int) -> None:
        self.max_line = max_line
        self.chunks: list[bytes] = []
        self.size = 0
        self.tail = 0  # bytes after the last b"\n"
        self._cut: tuple[int, int] | None = None  # chunk index, offset just after its last b"\n"
        self.skipping = False
        self._prefix = b""
        self._long = 0  # bytes of the overlong line so far

    @property
    def has_complete(self) -> bool:
        return self._cut is not None

    def append(self, chunk: bytes) -> None:
        self.chunks.append(chunk)
        self.size += len(chunk)
        cut = chunk.rfind(b"\n") + 1
        if cut:
            self._cut = (len(self.chunks) - 1, cut)
            self.tail = len(chunk) - cut
        else:
            self.tail += len(chunk)

    def count_newlines(self) -> int:
        return sum(c.count(b"\n") for c in self.chunks)

    def take_complete(self) -> pa.Buffer | None:
        """The complete lines, copied into one buffer of Arrow's memory pool, which hands freed
        pages back to the OS (glibc's heap keeps 8 MB blocks of joined `bytes`); the cut line
        after the last b"\n" stays, to be completed."""
        if self._cut is None:
            return None
        i, cut = self._cut
        head = self.chunks[:i] + [memoryview(self.chunks[i])[:cut]]
        out = pa.allocate_buffer(sum(len(c) for c in head))
        view, pos = memoryview(out).cast("B"), 0  # Arrow exports signed bytes
        for c in head:
            view[pos:pos + len(c)] = c
            pos += len(c)
        rest = [self.chunks[i][cut:], *self.chunks[i + 1:]]
        self.chunks = [c for c in rest if c]
        self.size, self._cut = self.tail, None
        return out

    def start_skipping(self) -> None:
        """The buffered cut line is overlong (complete lines were taken): drop all but its prefix."""
        assert self._cut is None
        prefix, n = [], 0
        for c in self.chunks:
            if n >= DEAD_PREFIX_BYTES:
                break
            prefix.append(c[:DEAD_PREFIX_BYTES - n])
            n += len(prefix[-1])
        self._prefix, self._long = b"".join(prefix), self.size
        self.chunks, self.size, self.tail, self.skipping = [], 0, 0, True

    def skip(self, chunk: bytes) -> tuple[bytes, ParsedBatch | None]:
        """Drop `chunk` up to the overlong line's end; what follows it, and its dead letter once
        it ended."""
        end = chunk.find(b"\n")
        if end < 0:
            self._long += len(chunk)
            return b"", None
        self._long += end
        return chunk[end + 1:], self.dead_letter(terminated=True)

    def dead_letter(self, *, terminated: bool) -> ParsedBatch:
        self.skipping = False
        how = ("" if terminated else
               ", not terminated when the window stopped (read again by the next window)")
        dead = DeadLetter(0, f"line of {self._long:,} bytes exceeds the maximum line size of "
                             f"{self.max_line:,} bytes (RTDS_MAX_LINE_BYTES){how}; "
                             f"its first {len(self._prefix):,} bytes are kept",
                          self._prefix, length=self._long)
        self._prefix, self._long = b"", 0
        return ParsedBatch(LANDING_SCHEMA.empty_table(), [dead], None, 0, 1)


class _Pipeline:
    """Batches are parsed on one thread (a second measured no faster on two cores) and placed and
    landed on another, strictly in stream order. At most `depth` batches are in flight, so memory
    stays at a few batches (3 instead of 2: ~10 MB more peak RSS, no faster); a failure anywhere
    is raised in the reading thread at its next hand-over or `settle()`, and no batch after a
    failed one is landed."""

    def __init__(self, parse: Callable[[pa.Buffer], ParsedBatch], depth: int = 2) -> None:
        self._parse, self._depth = parse, depth
        self._parser = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rtds-parse")
        self._lander = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rtds-land")
        self._jobs: collections.deque[Future[None]] = collections.deque()
        self._failed = False

    def submit(self, data: pa.Buffer, land: Callable[[ParsedBatch], None]) -> None:
        self._wait_for_room()
        parsed = self._parser.submit(self._parse, data)
        self._jobs.append(self._lander.submit(self._land, parsed, land))

    def submit_parsed(self, batch: ParsedBatch, land: Callable[[ParsedBatch], None]) -> None:
        """A batch made without parsing (an overlong line's dead letter), landed in its turn."""
        self._wait_for_room()
        done: Future[ParsedBatch] = Future()
        done.set_result(batch)
        self._jobs.append(self._lander.submit(self._land, done, land))

    def _wait_for_room(self) -> None:
        while len(self._jobs) >= self._depth or (self._jobs and self._jobs[0].done()):
            self._jobs.popleft().result()  # re-raises what failed on a worker

    def _land(self, parsed: Future[ParsedBatch], land: Callable[[ParsedBatch], None]) -> None:
        if self._failed:
            raise RuntimeError("an earlier batch of this window failed")
        try:
            land(parsed.result())
        except BaseException:
            self._failed = True
            raise

    def settle(self) -> None:
        while self._jobs:
            self._jobs.popleft().result()

    def __enter__(self) -> _Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        # On an unexpected error nothing new starts; work already running finishes first.
        self._failed = True
        self._lander.shutdown(wait=True, cancel_futures=True)
        self._parser.shutdown(wait=True, cancel_futures=True)
