"""The app's stream: an append-only log of serialized events with offsets, quirks and retention.

Offsets are 13-digit decimal strings (`1000000000000 + seq`), strictly increasing. The log keeps
each event as its final NDJSON line (bytes) plus the few fields the server filters on without
parsing (type, id). Full segments of the log are also kept gzip-ready (raw deflate, flushed to a
byte boundary), so an unfiltered reader is served without compressing anything.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import pickle
import random
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from rtds_pipeline.rtds.timestamps import iso_ms, now_ms
from rtds_pipeline.testserver.generator import DAY_MS, HOUR_MS, LifecycleGenerator

OFFSET_BASE = 1_000_000_000_000
SEGMENT_EVENTS = 512
UNKNOWN_TYPE = "APP_RATING_PROMPT"  # a type the spec does not know (yet)
FUTURE_CLAMP_MS = 5 * 60_000
COMPRESS_LEVEL = 1
# Bump when the generator's output changes, so cached backlogs are rebuilt.
GENERATOR_VERSION = 2
BACKLOG_CACHE_MAX_AGE_MS = 6 * HOUR_MS


def offset_of(seq: int) -> str:
    return str(OFFSET_BASE + seq)


def seq_of(offset: str) -> int | None:
    """The sequence number of an offset this log issued, or None if it is not one of ours."""
    if not offset.isdigit() or len(offset) != 13:
        return None
    return int(offset) - OFFSET_BASE


def deflate_segment(data: bytes) -> bytes:
    """Raw deflate, ending in a sync flush: concatenable after any byte-aligned deflate stream."""
    c = zlib.compressobj(COMPRESS_LEVEL, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)


@dataclasses.dataclass
class Quirks:
    """Rates of the stream's irregularities, per event. All on by default at realistic levels."""

    duplicate: float = 0.01
    late: float = 0.004
    future_skew: float = 0.002
    small_skew: float = 0.002
    processed_jitter: float = 0.2
    unknown_type: float = 0.0005
    unknown_field: float = 0.002

    @classmethod
    def none(cls) -> Quirks:
        return cls(0, 0, 0, 0, 0, 0, 0)


class StreamLog:
    """The event log of one app. Mutated from one thread (the server's event loop)."""

    def __init__(self, seed: int = 0, quirks: Quirks | None = None, *,
                 retention_events: int | None = None, retention_bytes: int | None = None,
                 retention_ms: int = 7 * DAY_MS, population: int = 2000,
                 first_seq: int = 0) -> None:
        self.seed = seed
        self.generator = LifecycleGenerator(seed, population)
        self.rng = random.Random(seed ^ 0x5EED)
        self.quirks = quirks or Quirks()
        self.retention_events = retention_events
        self.retention_bytes = retention_bytes
        self.retention_ms = retention_ms
        self.first_seq = first_seq  # oldest retained (a restarted server goes on from its last)
        self.lines: list[bytes] = []  # lines[i] is seq first_seq + i, without the newline
        self.types: list[str] = []
        self.ids: list[str] = []
        self.processed: list[int] = []
        self.duplicate: bytearray = bytearray()
        self.bytes_retained = 0
        self._segments: dict[int, bytes] = {}
        self._pending_dups: list[tuple[int, dict[str, Any]]] = []  # (due seq, event)
        self._waiters: asyncio.Event | None = None
        self.ever_had_data = False

    # ------------------------------------------------------------------ positions
    @property
    def next_seq(self) -> int:
        return self.first_seq + len(self.lines)

    def __len__(self) -> int:
        return len(self.lines)

    def line(self, seq: int) -> bytes:
        return self.lines[seq - self.first_seq]

    # ------------------------------------------------------------------ writing
    def generate(self, count: int, clock_start_ms: int, clock_end_ms: int) -> None:
        """Append `count` events whose `processed` times spread evenly over [start, end]."""
        step = (clock_end_ms - clock_start_ms) / max(count, 1)
        written = 0
        while written < count:
            for ev in self.generator.story(int(clock_start_ms + written * step)):
                if written >= count:
                    break
                self._place(ev, int(clock_start_ms + written * step))
                written += 1
                written += self._flush_due_duplicates(int(clock_start_ms + written * step),
                                                      count - written)
        self._enforce_retention(clock_end_ms)
        self._wake()

    def build_backlog(self, count: int, span_ms: int, cache_dir: Path | None = None) -> bool:
        """Append a backlog of `count` events processed over the last `span_ms`.

        With `cache_dir`, a backlog built for the same seed and settings in the last six hours is
        loaded instead of generated again (a million events take ~45 s to generate, ~2 s to load).
        Returns True when it came from the cache.
        """
        end = now_ms()
        key = hashlib.sha1(repr((GENERATOR_VERSION, self.seed, count, span_ms, self.quirks,
                                 self.generator.population, self.first_seq,
                                 self.next_seq)).encode()).hexdigest()[:16]
        path = cache_dir / f"backlog-{key}.pickle" if cache_dir else None
        if path is not None and path.exists():
            with path.open("rb") as f:
                built_at, state = pickle.load(f)
            if end - built_at < BACKLOG_CACHE_MAX_AGE_MS:
                self.__dict__.update(state)
                self._enforce_retention(end)
                self._wake()
                return True
        self.generate(count, end - span_ms, end)
        # Compress the backlog's full segments now (and cache them): the first reader then gets
        # bytes at the speed of the socket instead of waiting for zlib.
        for index in range(self.first_seq // SEGMENT_EVENTS, self.next_seq // SEGMENT_EVENTS):
            self.segment(index)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            state = {k: v for k, v in self.__dict__.items() if k != "_waiters"}
            tmp = path.with_suffix(".tmp")
            with tmp.open("wb") as f:
                pickle.dump((end, state), f, protocol=pickle.HIGHEST_PROTOCOL)
            tmp.replace(path)
        return False

    def generate_live(self, count: int) -> None:
        """Append `count` events processed now (live mode)."""
        self.generate(count, now_ms(), now_ms())

    def _place(self, ev: dict[str, Any], clock: int) -> None:
        """Put a story event on the log's clock, apply quirks, serialize and append it."""
        q, r = self.quirks, self.rng
        lag = ev["processed"] - ev["occurred"]
        processed = clock
        if r.random() < q.processed_jitter:
            processed -= r.randrange(1, 120_000)
        occurred = processed - lag
        roll = r.random()
        if roll < q.late:
            occurred = processed - r.randrange(DAY_MS, 90 * DAY_MS - HOUR_MS)
        elif roll < q.late + q.future_skew:
            occurred = processed  # device clock > 5 min ahead: Airship uses server time
        elif roll < q.late + q.future_skew + q.small_skew:
            occurred = processed + r.randrange(1_000, FUTURE_CLAMP_MS)
        ev["occurred"] = iso_ms(occurred)
        ev["processed"] = iso_ms(processed)
        if r.random() < q.unknown_type:
            ev["type"] = UNKNOWN_TYPE
        if r.random() < q.unknown_field:
            target = ev.get("body") if isinstance(ev.get("body"), dict) else ev
            target["experimental_attribution"] = {"model": "v2", "score": 0.42}
        self._append(ev, processed_ms=processed, duplicate=False)
        if r.random() < q.duplicate:
            self._pending_dups.append((self.next_seq + r.randrange(1, 2_000), ev))

    def _flush_due_duplicates(self, clock: int, room: int) -> int:
        written = 0
        while self._pending_dups and written < room and self._pending_dups[0][0] <= self.next_seq:
            _, ev = self._pending_dups.pop(0)
            # Same id, type, occurred, device and body; a new offset and processed time.
            copy = {**ev, "processed": iso_ms(clock)}
            self._append(copy, processed_ms=clock, duplicate=True)
            written += 1
        return written

    def _append(self, ev: dict[str, Any], *, processed_ms: int, duplicate: bool) -> None:
        seq = self.next_seq
        ev["offset"] = offset_of(seq)
        line = orjson.dumps(ev)
        self.lines.append(line)
        self.types.append(ev["type"])
        self.ids.append(ev["id"])
        self.processed.append(processed_ms)
        self.duplicate.append(duplicate)
        self.bytes_retained += len(line) + 1
        self.ever_had_data = True

    def _enforce_retention(self, now: int) -> None:
        """Drop the oldest events beyond the event, byte or age limit (7 days by default)."""
        n = len(self.lines)
        drop = n - self.retention_events if self.retention_events is not None else 0
        drop = max(drop, 0)
        bytes_left = self.bytes_retained - sum(len(x) + 1 for x in self.lines[:drop])
        if self.retention_bytes is not None:
            while drop < n and bytes_left > self.retention_bytes:
                bytes_left -= len(self.lines[drop]) + 1
                drop += 1
        horizon = now - self.retention_ms
        while drop < n and self.processed[drop] < horizon:
            drop += 1
        if drop:
            self.bytes_retained -= sum(len(x) + 1 for x in self.lines[:drop])
            del self.lines[:drop], self.types[:drop], self.ids[:drop], self.processed[:drop]
            del self.duplicate[:drop]
            self.first_seq += drop
            self._segments = {k: v for k, v in self._segments.items()
                              if k * SEGMENT_EVENTS >= self.first_seq}

    # ------------------------------------------------------------------ reading
    def segment(self, index: int) -> bytes | None:
        """Compressed bytes of the full segment `index` as an unfiltered /api/events reader sees
        it (COMPLIANCE events only go to readers who ask for them), or None if not retained."""
        start = index * SEGMENT_EVENTS
        if start < self.first_seq or start + SEGMENT_EVENTS > self.next_seq:
            return None
        seg = self._segments.get(index)
        if seg is None:
            i = start - self.first_seq
            lines = [line for line, t in zip(self.lines[i:i + SEGMENT_EVENTS],
                                             self.types[i:i + SEGMENT_EVENTS], strict=True)
                     if t != "COMPLIANCE"]
            seg = deflate_segment(b"".join(line + b"\n" for line in lines))
            self._segments[index] = seg
        return seg

    def start_seq(self, start: str | None, resume_offset: str | None) -> int:
        """First sequence to serve. Resume is exclusive. Caller has validated the offset form."""
        if resume_offset is not None:
            seq = seq_of(resume_offset)
            assert seq is not None
            return max(seq + 1, self.first_seq)
        if start == "EARLIEST":
            return self.first_seq
        return self.next_seq  # LATEST, and the default for `{}`

    async def wait_for(self, seq: int, timeout: float) -> bool:
        """Wait until `seq` exists or `timeout` passes; True if it exists."""
        if seq < self.next_seq:
            return True
        if self._waiters is None:
            self._waiters = asyncio.Event()
        waiter = self._waiters
        try:
            await asyncio.wait_for(waiter.wait(), timeout)
        except TimeoutError:
            pass
        return seq < self.next_seq

    def _wake(self) -> None:
        if self._waiters is not None:
            self._waiters.set()
            self._waiters = None

    # ------------------------------------------------------------------ ground truth
    def ground_truth(self) -> Iterator[dict[str, Any]]:
        """Every retained event in stream order, with its offset and whether it is a copy."""
        for i, line in enumerate(self.lines):
            yield {"offset": offset_of(self.first_seq + i), "id": self.ids[i],
                   "type": self.types[i], "duplicate": bool(self.duplicate[i]),
                   "event": orjson.loads(line)}
