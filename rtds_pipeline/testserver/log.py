"""The app's stream: an append-only log of serialized events with offsets, quirks and retention.

Offsets are 13-digit decimal strings (`1000000000000 + seq`), strictly increasing. Memory stays
small whatever the backlog (~150 bytes per event): the log keeps per event only the fields the
server filters on, packed (type code, 16-byte id, processed time, size), and its lines compressed
by segments of SEGMENT_EVENTS. A full segment is kept gzip-ready (raw deflate of the lines an
unfiltered /api/events reader sees, flushed to a byte boundary), so such a reader is served
without compressing anything; COMPLIANCE lines, which only some readers see, are compressed
beside it. Only the newest, unfinished segment is held as plain lines. Filtered readers
decompress one segment at a time (the last one is cached).
"""

from __future__ import annotations

import array
import asyncio
import ctypes
import ctypes.util
import dataclasses
import hashlib
import heapq
import os
import pickle
import random
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from rtds_pipeline.protocol.timestamps import iso_ms, now_ms
from rtds_pipeline.testserver.generator import (
    DAY_MS,
    DEVICE_CLOCKS,
    HOUR_MS,
    SERVER_STAMPED,
    LifecycleGenerator,
)

OFFSET_BASE = 1_000_000_000_000
SEGMENT_EVENTS = 512
UNKNOWN_TYPE = "APP_RATING_PROMPT"  # a type the spec does not know (yet)
FUTURE_CLAMP_MS = 5 * 60_000
COMPRESS_LEVEL = 1
# Bump when the generator's output changes, so cached backlogs are rebuilt.
GENERATOR_VERSION = 4  # 4: lifecycle rates, causal engagement, device-shaped quirks
BACKLOG_CACHE_MAX_AGE_MS = 6 * HOUR_MS
_EVENT, _COPY, _STORY = 0, 1, 2  # kinds of what the log holds until its time comes


_TRIM_EVERY_S = 10.0
_last_trim = 0.0


def _return_freed_memory() -> None:
    """Hand the heap's free pages back to the system (glibc's `malloc_trim`), at most every
    `_TRIM_EVERY_S`. The dropped segments are tens of KB each, below glibc's mmap threshold once
    it has adapted, so their pages stay in the heap between the live ones: measured with
    retention full, the Python objects stay flat (51.7 MB traced) while RSS wandered 83-96 MB."""
    global _last_trim
    now = time.monotonic()
    if _LIBC is not None and now - _last_trim >= _TRIM_EVERY_S:
        _last_trim = now
        _LIBC.malloc_trim(0)


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        lib = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return lib if lib is not None and hasattr(lib, "malloc_trim") else None


_LIBC = _libc()


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
    """Rates of the stream's irregularities, all on by default at realistic levels, shaped like
    real devices: `late` is the share of device batches (a session and what happened in it,
    a Message Center visit) delivered 1–88 days late, all their events by the same delay;
    `future_skew` and `small_skew` are the shares of devices whose clock runs more than 5
    minutes ahead (Airship then uses its own time) or less (a stable offset per channel). The
    others are per event."""

    duplicate: float = 0.01
    late: float = 0.01
    future_skew: float = 0.01
    small_skew: float = 0.02
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
                 retention_ms: int = 7 * DAY_MS, population: int = 8000,
                 first_seq: int = 0) -> None:
        self.seed = seed
        # A log that starts after offsets an earlier life handed out (its state lost) must not
        # repeat that life's events: the same seed would give the same ids again.
        stream_seed = seed if first_seq == 0 else hash((seed, first_seq))
        self.generator = LifecycleGenerator(stream_seed, population)
        self.rng = random.Random(stream_seed ^ 0x5EED)
        self.quirks = quirks or Quirks()
        self.retention_events = retention_events
        self.retention_bytes = retention_bytes
        self.retention_ms = retention_ms
        # Oldest retained. A restarted server goes on from its last (rounded up to a segment).
        first_seq = -(-first_seq // SEGMENT_EVENTS) * SEGMENT_EVENTS
        self.first_seq = first_seq
        self._base = first_seq  # seq of index 0 of the packed columns below
        self._type_code = array.array("B")  # per event: index into _type_names
        self._type_names: list[str] = []
        self._type_index: dict[str, int] = {}
        self._id_bytes = bytearray()  # per event: 16 bytes of its UUID
        self._odd_ids: dict[int, str] = {}  # seq → id, for ids that are not canonical UUIDs
        self._processed = array.array("q")
        self._sizes = array.array("I")  # line length + newline
        self.duplicate: bytearray = bytearray()
        self.bytes_retained = 0
        self._tail: list[bytes] = []  # lines of the unfinished segment, from _tail_start
        self._tail_start = first_seq
        self._segments: dict[int, bytes] = {}  # full segment → deflated lines (no COMPLIANCE)
        self._compliance: dict[int, bytes] = {}  # full segment → deflated COMPLIANCE lines
        self._cached: tuple[int, list[bytes]] | None = None  # last segment decompressed
        # What the clock has not reached yet, a heap of (when, order, kind, item): events not
        # yet processed by Airship (a latent CLOSE), copies of events already in the stream,
        # stories that begin later (an open hours after its push: built when it begins).
        self._pending: list[tuple[int, int, int, Any]] = []
        self._pending_order = 0
        self._skews: dict[str, int] = {}  # channel → how far ahead its device's clock runs
        self._waiters: asyncio.Event | None = None
        self.ever_had_data = False

    # ------------------------------------------------------------------ positions
    @property
    def next_seq(self) -> int:
        return self._tail_start + len(self._tail)

    def __len__(self) -> int:
        return self.next_seq - self.first_seq

    def type_of(self, seq: int) -> str:
        return self._type_names[self._type_code[seq - self._base]]

    def id_of(self, seq: int) -> str:
        odd = self._odd_ids.get(seq)
        if odd is not None:
            return odd
        i = (seq - self._base) * 16
        return _uuid_text(self._id_bytes[i:i + 16])

    def processed_of(self, seq: int) -> int:
        return self._processed[seq - self._base]

    def line(self, seq: int) -> bytes:
        if seq >= self._tail_start:
            return self._tail[seq - self._tail_start]
        index = seq // SEGMENT_EVENTS
        if self._cached is None or self._cached[0] != index:
            self._cached = (index, self._segment_lines(index))
        return self._cached[1][seq - index * SEGMENT_EVENTS]

    def _segment_lines(self, index: int) -> list[bytes]:
        """Every line of a full segment, in order: the fast segment's lines with the COMPLIANCE
        lines put back where they were."""
        plain = _inflate(self._segments[index])
        compliance = _inflate(self._compliance[index]) if index in self._compliance else []
        code = self._type_index.get("COMPLIANCE", -1)
        start = index * SEGMENT_EVENTS - self._base
        out, p, c = [], iter(plain), iter(compliance)
        for i in range(start, start + SEGMENT_EVENTS):
            out.append(next(c) if self._type_code[i] == code else next(p))
        return out

    # Views for tests and tools (they copy: not for the serving path).
    @property
    def lines(self) -> list[bytes]:
        return [self.line(s) for s in range(self.first_seq, self.next_seq)]

    @property
    def types(self) -> list[str]:
        return [self.type_of(s) for s in range(self.first_seq, self.next_seq)]

    @property
    def ids(self) -> list[str]:
        return [self.id_of(s) for s in range(self.first_seq, self.next_seq)]

    # ------------------------------------------------------------------ writing
    def generate(self, count: int, clock_start_ms: int, clock_end_ms: int) -> None:
        """Append `count` events processed over [start, end]. Each story takes its share of the
        span (its events' share of those left to write, so the events still pending — a latent
        CLOSE, tomorrow's opens — do not push the clock past the end) and happens at the end of
        it; an event joins the stream once the clock has reached its `processed` time."""
        pending = self._pending
        clock = float(clock_start_ms)
        now = clock_start_ms
        share = 1  # the last story's events: the next one's likely share
        written = 0
        while written < count:
            if not pending or pending[0][0] > now:
                step = (clock_end_ms - clock) / max(count - written, 1)
                now = int(min(clock + share * step, clock_end_ms))
                if not pending or pending[0][0] > now:
                    story = self.generator.story(now, self._late_ms())
                    self._enqueue(story)
                    share = max(len(story), 1)
                    clock += share * step
                    continue
            due, _, kind, item = heapq.heappop(pending)
            if kind == _STORY:
                fn, args = item
                self._enqueue(fn(due, *args))
            elif kind == _COPY:
                # Same id, type, occurred, device and body; a new offset and processed time.
                self._append({**item, "processed": iso_ms(due)}, processed_ms=due, duplicate=True)
                written += 1
            else:
                self._place(item)
                written += 1
        self.enforce_retention(clock_end_ms)
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
                self.restore(state)
                self.enforce_retention(end)
                return True
        self.generate(count, end - span_ms, end)  # segments are compressed as they fill
        if path is not None:
            write_atomically(path, pickle.dumps((end, self.state()), pickle.HIGHEST_PROTOCOL))
        return False

    def state(self) -> dict[str, Any]:
        """Everything the log is, to pickle: events, offsets, quirks to come and the generator
        (so a restored log goes on with the same population and never repeats an id)."""
        return {k: v for k, v in self.__dict__.items() if k not in ("_waiters", "_cached")}

    def restore(self, state: dict[str, Any]) -> None:
        """Become the log `state()` captured (readers waiting for new events are woken)."""
        self.__dict__.update(state)
        self._cached = None
        self._wake()

    def generate_live(self, count: int) -> None:
        """Append `count` events processed now (live mode)."""
        self.generate(count, now_ms(), now_ms())

    def _late_ms(self) -> int:
        """How late the next story's device batch arrives (0: on time). Log-uniform from 1 to 88
        days: most late devices were offline a day or two; nothing older than 90 days is
        delivered, and a batch's latent CLOSE comes up to 30 h after the rest."""
        if self.rng.random() >= self.quirks.late:
            return 0
        return int(DAY_MS * 88 ** self.rng.random())

    def _enqueue(self, events: list[dict[str, Any]]) -> None:
        q, r = self.quirks, self.rng
        # Parallel ingestion: the stream is not in processed order. An upload (the events of a
        # story Airship processed at one time) moves as one.
        pending, order = self._pending, self._pending_order
        upload, shift = None, 0
        for ev in events:
            processed = ev["processed"]
            if processed != upload:
                upload = processed
                shift = r.randrange(1, 120_000) if r.random() < q.processed_jitter else 0
            heapq.heappush(pending, (processed + shift, order, _EVENT, ev))
            order += 1
        self._pending_order = order
        for at, fn, args in self.generator.take_later():
            self._hold(at, _STORY, (fn, args))

    def _hold(self, due: int, kind: int, item: Any) -> None:
        heapq.heappush(self._pending, (due, self._pending_order, kind, item))
        self._pending_order += 1

    def _clock_skew(self, ev: dict[str, Any]) -> int:
        """How far ahead the clock of the device that stamped `ev` runs: stable per channel
        (the channel id's last 32 bits choose), 0 for events Airship stamps itself."""
        dev = ev.get("device")
        if dev is None or ev["type"] in SERVER_STAMPED or dev.get("device_type") not in DEVICE_CLOCKS:
            return 0
        channel = dev["channel"]
        skew = self._skews.get(channel)
        if skew is None:
            skew = self._skews[channel] = self._skew_of(channel)
        return skew

    def _skew_of(self, channel: str) -> int:
        q = self.quirks
        u = int(channel[-8:], 16) / 2**32
        if u < q.future_skew:  # 5 minutes to 2 hours ahead (a clock set by hand, a wrong zone)
            return FUTURE_CLAMP_MS + int(u / q.future_skew * 2 * HOUR_MS)
        if u < q.future_skew + q.small_skew:  # a drifting clock: a second to 5 minutes ahead
            return 1_000 + int((u - q.future_skew) / q.small_skew * (FUTURE_CLAMP_MS - 1_000))
        return 0

    def _place(self, ev: dict[str, Any]) -> None:
        """Serialize a story event whose processed time has come, with its quirks, and append it."""
        q, r = self.quirks, self.rng
        processed = ev["processed"]
        occurred = ev["occurred"] + self._clock_skew(ev)
        if occurred > processed + FUTURE_CLAMP_MS:
            occurred = processed  # device clock > 5 min ahead: Airship uses server time
        ev["occurred"] = iso_ms(occurred)
        ev["processed"] = iso_ms(processed)
        if r.random() < q.unknown_type:
            ev["type"] = UNKNOWN_TYPE
        if r.random() < q.unknown_field:
            body = ev.get("body")
            target = body if isinstance(body, dict) else ev
            target["experimental_attribution"] = {"model": "v2", "score": 0.42}
        self._append(ev, processed_ms=processed, duplicate=False)
        if r.random() < q.duplicate:
            # Ingestion retries: the copy follows within minutes, now and then hours.
            later = r.randrange(1_000, 300_000) if r.random() < 0.9 else r.randrange(300_000, 2 * HOUR_MS)
            self._hold(processed + later, _COPY, ev)

    def _append(self, ev: dict[str, Any], *, processed_ms: int, duplicate: bool) -> None:
        seq = self.next_seq
        ev["offset"] = offset_of(seq)
        # A copy of exactly its size: orjson's result can hold several KB of spare capacity.
        line = bytes(memoryview(orjson.dumps(ev)))
        code = self._type_index.get(ev["type"])
        if code is None:
            code = self._type_index[ev["type"]] = len(self._type_names)
            self._type_names.append(ev["type"])
        self._type_code.append(code)
        try:
            packed = bytes.fromhex(ev["id"].replace("-", ""))
            if len(packed) != 16 or _uuid_text(packed) != ev["id"]:
                raise ValueError("not a canonical UUID")
        except (ValueError, TypeError, AttributeError):
            packed = bytes(16)
            self._odd_ids[seq] = ev["id"]
        self._id_bytes += packed
        self._processed.append(processed_ms)
        self._sizes.append(len(line) + 1)
        self.duplicate.append(duplicate)
        self.bytes_retained += len(line) + 1
        self.ever_had_data = True
        self._tail.append(line)
        if (seq + 1) % SEGMENT_EVENTS == 0:
            self._seal()

    def _seal(self) -> None:
        """Compress the finished segment (segments start at multiples of SEGMENT_EVENTS)."""
        index = self._tail_start // SEGMENT_EVENTS
        plain = [x for i, x in enumerate(self._tail) if self.type_of(self._tail_start + i) != "COMPLIANCE"]
        compliance = [x for i, x in enumerate(self._tail)
                      if self.type_of(self._tail_start + i) == "COMPLIANCE"]
        self._segments[index] = deflate_segment(b"".join(x + b"\n" for x in plain))
        if compliance:
            self._compliance[index] = deflate_segment(b"".join(x + b"\n" for x in compliance))
        self._tail_start += len(self._tail)
        self._tail = []

    def enforce_retention(self, now: int) -> None:
        """Drop the oldest events beyond the event, byte or age limit (7 days by default)."""
        n = len(self)
        drop = n - self.retention_events if self.retention_events is not None else 0
        drop = max(drop, 0)
        off = self.first_seq - self._base
        bytes_left = self.bytes_retained - sum(self._sizes[off:off + drop])
        if self.retention_bytes is not None:
            while drop < n and bytes_left > self.retention_bytes:
                bytes_left -= self._sizes[off + drop]
                drop += 1
        horizon = now - self.retention_ms
        while drop < n and self._processed[off + drop] < horizon:
            drop += 1
        if not drop:
            return
        self.bytes_retained -= sum(self._sizes[off:off + drop])
        self.first_seq += drop
        for seq in [s for s in self._odd_ids if s < self.first_seq]:
            del self._odd_ids[seq]
        # Whole segments before the oldest retained event go, with their packed fields.
        keep_from = max(self._base, min(self.first_seq // SEGMENT_EVENTS * SEGMENT_EVENTS,
                                        self._tail_start))
        cut = keep_from - self._base
        if cut > 0:
            del self._type_code[:cut], self._processed[:cut], self._sizes[:cut]
            del self._id_bytes[:cut * 16], self.duplicate[:cut]
            self._base = keep_from
        first_index = self.first_seq // SEGMENT_EVENTS
        self._segments = {k: v for k, v in self._segments.items() if k >= first_index}
        self._compliance = {k: v for k, v in self._compliance.items() if k >= first_index}
        self._cached = None
        _return_freed_memory()

    # ------------------------------------------------------------------ reading
    def segment(self, index: int) -> bytes | None:
        """Compressed bytes of the full segment `index` as an unfiltered /api/events reader sees
        it (COMPLIANCE events only go to readers who ask for them), or None if not retained."""
        if index * SEGMENT_EVENTS < self.first_seq:
            return None
        return self._segments.get(index)

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
        for seq in range(self.first_seq, self.next_seq):
            yield {"offset": offset_of(seq), "id": self.id_of(seq), "type": self.type_of(seq),
                   "duplicate": bool(self.duplicate[seq - self._base]),
                   "event": orjson.loads(self.line(seq))}


def write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` with `data` all at once, durably (a crash leaves the old file or the new)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _uuid_text(packed: bytes | bytearray) -> str:
    h = packed.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _inflate(segment: bytes) -> list[bytes]:
    return zlib.decompressobj(-15).decompress(segment).split(b"\n")[:-1]
