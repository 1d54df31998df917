"""Group commit: the requests of a moment share one landing window, committed in one record.

A request's body is split into NDJSON lines (one per event object) as it arrives; the lines of
every request in a window are parsed together by the stream's own parser (`lake.batch`), landed
by the same `LandingWriter` and published by one `CommitLog` record. Only then are the waiting
requests answered: 2xx means every event of the request is in a committed window. A window
closes at most `max_seconds` after its first request, once no request joined it for
`quiet_seconds`, or once it holds `max_events` events or `max_bytes` bytes; the next window
fills while one is being committed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import threading
import time
from collections.abc import Callable

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from rtds_pipeline.extract.webhook.config import CommitPolicy
from rtds_pipeline.lake.batch import LANDING_SCHEMA, DeadLetter, ParsedBatch, parse_batch
from rtds_pipeline.lake.commits import Commit, CommitLog, write_after_compactions
from rtds_pipeline.lake.storage import Lake
from rtds_pipeline.lake.writer import LandingWriter
from rtds_pipeline.protocol.timestamps import iso_ms

log = logging.getLogger(__name__)

_JSON_KIND = {type(None): "null", bool: "boolean", int: "number", float: "number",
              str: "string", list: "array", dict: "object"}


class NotDurable(Exception):
    """The request's events are not in a committed window: answer 5xx so the sender retries."""


class Overloaded(NotDurable):
    """Too many bytes wait for commits already: the sender should come back shortly."""


class CommitterStopped(NotDurable):
    """The receiver is shutting down, or stopped after a fatal error."""


@dataclasses.dataclass
class SplitBody:
    """A request body as the events it holds. `error` set: the body itself is unusable (not
    JSON, or JSON but neither an array nor an object); it is kept whole as a dead letter."""

    lines: list[bytes | None] = dataclasses.field(default_factory=list)  # None: not an object
    dead: list[tuple[int, str, bytes]] = dataclasses.field(default_factory=list)  # (index, why, raw)
    error: str | None = None

    @property
    def events(self) -> int:
        return len(self.lines)


def split_body(body: bytes) -> SplitBody:
    """One NDJSON line per element of a JSON array, or the single object Airship may send.

    Elements are re-serialized compactly by orjson (same members, same order, same values): the
    landing `raw` column then holds one line per event, as for the stream. Elements that are not
    objects are set aside here, as dead letters, so the Arrow reader only ever sees objects."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return SplitBody(error=f"the body is not JSON: {exc}"[:500])
    if isinstance(doc, dict):
        doc = [doc]
    elif not isinstance(doc, list):
        return SplitBody(error="the body must be a JSON array of event objects or one event "
                               f"object, not a JSON {_JSON_KIND.get(type(doc), 'value')}")
    out = SplitBody()
    for i, element in enumerate(doc):
        if isinstance(element, dict):
            out.lines.append(orjson.dumps(element))
        else:
            out.lines.append(None)
            out.dead.append((i, f"element {i} of the request is not an event object but a JSON "
                                f"{_JSON_KIND.get(type(element), 'value')}", orjson.dumps(element)))
    return out


@dataclasses.dataclass(frozen=True)
class Receipt:
    """What a request's window did with it, once committed."""

    window_seq: int
    received: int  # event elements in the request
    landed: int
    dead_letters: int
    refused: str | None = None  # the whole body was unusable (kept as a dead letter): answer 400


@dataclasses.dataclass
class _Delivery:
    body: bytes
    split: SplitBody
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Receipt]


@dataclasses.dataclass
class WindowStats:
    window_seq: int
    requests: int
    events: int
    dead_letters: int
    seconds: float  # from closing the window to the commit record
    reason: str


class GroupCommitter:
    """The one writer of a webhook source's landing windows (a thread of its own)."""

    def __init__(self, lake: Lake, source_key: str, policy: CommitPolicy,
                 on_fatal: Callable[[BaseException], None] | None = None,
                 on_window: Callable[[WindowStats], None] | None = None) -> None:
        self.lake, self.source_key, self.policy = lake, source_key, policy
        self.log = CommitLog(lake, source_key)
        last = self.log.latest()
        self.next_seq = last.window_seq + 1 if last else 1
        self.on_fatal, self.on_window = on_fatal, on_window
        self.fatal: BaseException | None = None
        self._cond = threading.Condition()
        self._open: list[_Delivery] = []
        self._open_events = 0
        self._open_bytes = 0
        self._opened_at = 0.0
        self._joined_at = 0.0
        self._committing_bytes = 0
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"rtds-webhook-{source_key}",
                                        daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ request side
    async def deliver(self, body: bytes, split: SplitBody) -> Receipt:
        """Wait until the request's events are committed; raises `NotDurable` otherwise."""
        loop = asyncio.get_running_loop()
        delivery = _Delivery(body, split, loop, loop.create_future())
        with self._cond:
            if self._stopping or self.fatal is not None:
                raise CommitterStopped("the receiver is stopping; retry shortly")
            if self._open_bytes + self._committing_bytes + len(body) > self.policy.max_pending_bytes:
                raise Overloaded(f"more than {self.policy.max_pending_bytes >> 20} MiB wait for "
                                 "their commit; retry shortly")
            now = time.monotonic()
            if not self._open:
                self._opened_at = now
            self._joined_at = now
            self._open.append(delivery)
            self._open_events += max(split.events, 1)
            self._open_bytes += len(body)
            if len(self._open) == 1 or self._full():
                self._cond.notify()
        return await delivery.future

    def close(self, timeout: float = 60.0) -> None:
        """Commit what is open, then stop the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout)

    @property
    def pending_requests(self) -> int:
        return len(self._open)

    # ------------------------------------------------------------------ the committing thread
    def _full(self) -> bool:
        return (self._open_events >= self.policy.max_events
                or self._open_bytes >= self.policy.max_bytes)

    def _close_reason(self, now: float) -> str | None:
        if self._stopping:
            return "shutdown"
        if self._full():
            return f"{self._open_events} events, {self._open_bytes} bytes"
        if now - self._opened_at >= self.policy.max_seconds:
            return f"{self.policy.max_seconds:g} s"
        if now - self._joined_at >= self.policy.quiet_seconds:
            return f"quiet {self.policy.quiet_seconds:g} s"
        return None

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    now = time.monotonic()
                    reason = self._close_reason(now) if self._open else None
                    if reason is not None:
                        break
                    if self._stopping:
                        return
                    timeout = (min(self._opened_at + self.policy.max_seconds,
                                   self._joined_at + self.policy.quiet_seconds) - now
                               if self._open else None)
                    self._cond.wait(timeout)
                window, self._open = self._open, []
                self._committing_bytes = self._open_bytes
                self._open_events = self._open_bytes = 0
            try:
                self._commit(window, reason)
            finally:
                with self._cond:
                    self._committing_bytes = 0

    def _commit(self, window: list[_Delivery], reason: str) -> None:
        seq = self.next_seq
        t0 = time.monotonic()
        # The window's number in file names: a redelivered batch lands again in a later window
        # with the same offsets, and must never overwrite the earlier window's file.
        writer = LandingWriter(self.lake, self.source_key, seq, name_prefix=f"w{seq:010d}-")
        try:
            batch, spans = _window_batch(window, seq)
            writer.add(batch)
            files, dead_files = writer.finish()
            rows = batch.rows
            processed = pc.max(rows.column("processed")).as_py() if rows.num_rows else None
            commit = Commit(
                source=self.source_key, window_seq=seq, resume_offset=None, previous_offset=None,
                first_offset=None, files=files, dead_letter_files=dead_files,
                events=rows.num_rows, dead_letters=len(batch.dead),
                offset_updates=batch.offset_updates, keepalives=0, reconnects=0,
                bytes_read=sum(len(d.body) for d in window),
                max_processed=_iso_ms(processed), committed_at=time.time(),
                stop_reason=f"webhook: {len(window)} requests; closed at {reason}",
                duplicates=writer.duplicates, late_events=writer.late)
            # A housekeeping compaction may have taken the number: the next free one then.
            write_after_compactions(self.log, commit)
        except FileExistsError as exc:  # another writer owns this source: stop, loudly
            writer.close()
            _remove_quietly(self.lake, writer)
            self._fail(window, CommitterStopped(
                "another receiver owns this source; this one stopped"))
            self._stop_fatally(exc)
            return
        except Exception as exc:
            writer.close()
            _remove_quietly(self.lake, writer)
            log.error("window %d of %s could not be committed (%s: %s); its %d requests get 503 "
                      "and will be retried by the sender", seq, self.source_key,
                      type(exc).__name__, exc, len(window))
            self._fail(window, NotDurable(f"the events could not be made durable ({type(exc).__name__})"))
            self._resync()
            return
        self.next_seq = commit.window_seq + 1
        receipts = _receipts(window, batch, spans, commit.window_seq)  # the record that holds them
        _settle(window, receipts)
        if self.on_window is not None:
            self.on_window(WindowStats(commit.window_seq, len(window), commit.events, commit.dead_letters,
                                       time.monotonic() - t0, reason))

    def _resync(self) -> None:
        """After a failed commit: if its record was written after all, continue after it."""
        try:
            last = self.log.latest()
        except Exception:  # the store is still unreachable: the next window retries this seq
            return
        if last is not None and last.window_seq >= self.next_seq:
            self.next_seq = last.window_seq + 1

    def _fail(self, window: list[_Delivery], exc: NotDurable) -> None:
        _settle(window, [exc] * len(window))

    def _stop_fatally(self, exc: BaseException) -> None:
        log.critical("stopping: %s", exc)
        with self._cond:
            self.fatal = exc
            self._stopping = True
            rest, self._open = self._open, []
        self._fail(rest, CommitterStopped("the receiver stopped"))
        if self.on_fatal is not None:
            self.on_fatal(exc)


def _window_batch(window: list[_Delivery], seq: int) -> tuple[ParsedBatch, list[tuple[int, int]]]:
    """Every request's lines parsed as one NDJSON batch. Positions count every element and every
    refused body of the window in arrival order; returns the batch and each request's span."""
    lines: list[bytes] = []
    line_pos: list[int] = []
    dead: list[DeadLetter] = []
    spans: list[tuple[int, int]] = []
    pos = 0
    for d in window:
        start = pos
        if d.split.error is not None:
            dead.append(DeadLetter(pos, d.split.error, d.body))
            pos += 1
        else:
            for line in d.split.lines:
                if line is not None:
                    lines.append(line)
                    line_pos.append(pos)
                pos += 1
            dead.extend(DeadLetter(start + i, why, raw) for i, why, raw in d.split.dead)
        spans.append((start, pos))
    if not lines:
        return ParsedBatch(LANDING_SCHEMA.empty_table(), sorted(dead, key=_position), None, 0, 0), spans
    parsed = parse_batch(b"".join(line + b"\n" for line in lines), seq)
    # parse_batch numbers the lines it was given; map them to their places in the window.
    where = np.asarray(line_pos, dtype=np.int64)
    i = LANDING_SCHEMA.get_field_index("window_pos")
    line_no = parsed.rows.column(i).to_numpy()
    parsed.rows = parsed.rows.set_column(i, LANDING_SCHEMA.field(i), pa.array(where[line_no]))
    for letter in parsed.dead:
        letter.position = int(where[letter.position])
    parsed.dead = sorted(parsed.dead + dead, key=_position)
    return parsed, spans


def _position(d: DeadLetter) -> int:
    return d.position


def _receipts(window: list[_Delivery], batch: ParsedBatch, spans: list[tuple[int, int]],
              seq: int) -> list[Receipt]:
    landed_at = batch.rows.column("window_pos").to_numpy() if batch.rows.num_rows else np.zeros(0)
    dead_at = np.asarray([d.position for d in batch.dead], dtype=np.int64)
    out = []
    for d, (start, end) in zip(window, spans, strict=True):
        landed = int(np.searchsorted(landed_at, end) - np.searchsorted(landed_at, start))
        dead = int(np.searchsorted(dead_at, end) - np.searchsorted(dead_at, start))
        out.append(Receipt(seq, d.split.events, landed, dead, d.split.error))
    return out


def _settle(window: list[_Delivery], results: list[Receipt] | list[NotDurable]) -> None:
    """Answer each waiting request on its own event loop, one call per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future, object]]] = {}
    for d, r in zip(window, results, strict=True):
        by_loop.setdefault(d.loop, []).append((d.future, r))
    for loop, pairs in by_loop.items():
        try:
            loop.call_soon_threadsafe(_resolve, pairs)
        except RuntimeError:  # that loop is closed: nobody waits any more
            pass


def _resolve(pairs: list[tuple[asyncio.Future, object]]) -> None:
    for future, result in pairs:
        if future.done():  # the request gave up waiting (ack timeout, client gone)
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)


def _remove_quietly(lake: Lake, writer: LandingWriter) -> None:
    """A window that was not committed: its files are orphans; remove the ones known."""
    for f in (*writer.files, *writer.dead_files):
        try:
            lake.fs.rm(lake.path(f.path))
        except Exception:  # left for orphan collection
            pass


def _iso_ms(value: datetime.datetime | None) -> str | None:
    return iso_ms(int(value.timestamp() * 1000)) if value is not None else None
