"""One bounded window of the stream.

Stops at whichever comes first: max seconds, max events, max bytes, or "caught up" (a keep-alive
arrived, or `processed` reached the window's start time). Reconnects inside the window from the
last received offset with jittered exponential back-off, dropping a replayed boundary event.
Python touches chunks, never single events: decompressed chunks are joined into batches of
`batch_bytes`, cut after their last b"\\n", and handed to a pipeline — parse on one thread, then
place (positions, offsets, stats) and land on another, strictly in stream order — while the next
batch is received. All three spend their time in C code that releases the GIL (ISA-L's inflate,
Arrow's JSON reader, the Parquet writer), so they share the cores.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import random
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import pyarrow as pa
import pyarrow.compute as pc

from rtds_pipeline.lake.batch import ParsedBatch, parse_batch
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
        with _Pipeline(functools.partial(parse_batch, window_seq=self.window_seq)) as pipeline:
            return self._read(pipeline, resume_offset, start)

    def _read(self, pipeline: _Pipeline, resume_offset: str | None, start: str) -> WindowStats:
        lim, stats = self.limits, WindowStats()
        t0 = time.monotonic()
        deadline = t0 + lim.max_seconds
        window_start_ms = time.time_ns() // 1_000_000
        position = resume_offset
        attempt = 0
        pos_counter = 0
        next_progress = t0 + 1.0

        while True:
            skip_offset = position  # a server replaying the resume point: drop that event
            req = (self.request.resumed_at(position) if position is not None
                   else dataclasses.replace(self.request, start=start))
            remaining = deadline - time.monotonic()
            conn = StreamConnection(self.endpoint, req, idle_timeout=min(lim.idle_timeout, max(remaining, 0.5)))
            buf: list[bytes] = []
            buffered = 0
            buffered_lines = 0
            ended_with_newline = True
            idle = False  # a keep-alive ended a chunk: the server has nothing more right now

            def place(batch: ParsedBatch) -> None:
                """Runs on the landing thread, batches strictly in stream order."""
                nonlocal position, pos_counter, skip_offset
                batch.shift_positions(pos_counter)
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
                stats.keepalives += batch.keepalives
                if batch.last_offset is not None:
                    position = batch.last_offset
                    stats.last_offset = position
                self.on_batch(batch)

            def process() -> None:
                """Hand the buffered complete lines to the pipeline; receiving goes on meanwhile.
                One copy (the join); the cut line after the last newline stays buffered."""
                nonlocal buf, buffered, buffered_lines
                data, buf = _join_lines(buf)
                buffered, buffered_lines = sum(len(c) for c in buf), 0
                if data is not None:
                    pipeline.submit(data, place)  # blank lines are counted and dropped there

            def settle() -> None:
                """Process what is buffered and wait for it: stats and position are exact after."""
                process()
                pipeline.settle()

            try:
                healthy = False
                for chunk in conn.chunks():
                    stats.bytes += len(chunk)
                    # A keep-alive (blank line) sent while idle ends its chunk; one may straddle
                    # two chunks. Found without scanning the chunk: the parser counts them all.
                    idle = chunk.endswith(b"\n\n") or (chunk[0] == 10 and ended_with_newline)
                    ended_with_newline = chunk[-1] == 10
                    buf.append(chunk)
                    buffered += len(chunk)
                    if idle:
                        healthy = True
                    # Lines are counted only near max_events (no event is shorter than
                    # MIN_EVENT_BYTES): a second full scan of every chunk costs ~10 %.
                    if stats.events + buffered // MIN_EVENT_BYTES >= lim.max_events:
                        buffered_lines = sum(b.count(b"\n") for b in buf)  # blanks too: an upper bound
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
                    if (idle or stats.keepalives) and lim.stop_when_caught_up:
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

    @staticmethod
    def _stop(stats: WindowStats, reason: str, settle: Callable[[], None]) -> WindowStats:
        settle()
        stats.stop_reason = reason
        return stats


def _join_lines(chunks: list[bytes]) -> tuple[pa.Buffer | None, list[bytes]]:
    """The complete lines of `chunks` copied into one buffer of Arrow's memory pool, which hands
    freed pages back to the OS (glibc's heap keeps 8 MB blocks of joined `bytes`), and the cut
    line after the last b"\\n", still to be completed."""
    for i in range(len(chunks) - 1, -1, -1):
        cut = chunks[i].rfind(b"\n") + 1
        if cut:
            break
    else:
        return None, chunks
    head = chunks[:i] + [memoryview(chunks[i])[:cut]]
    out = pa.allocate_buffer(sum(len(c) for c in head))
    view, pos = memoryview(out).cast("B"), 0  # Arrow exports signed bytes
    for c in head:
        view[pos:pos + len(c)] = c
        pos += len(c)
    tail = chunks[i][cut:] + b"".join(chunks[i + 1:])
    return out, [tail] if tail else []


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
        while len(self._jobs) >= self._depth or (self._jobs and self._jobs[0].done()):
            self._jobs.popleft().result()  # re-raises what failed on a worker
        parsed = self._parser.submit(self._parse, data)
        self._jobs.append(self._lander.submit(self._land, parsed, land))

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
