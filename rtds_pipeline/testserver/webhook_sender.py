"""The test server as Airship's webhook sender: POSTs the app's events to a URL, in batches.

What Airship's webhook integration does, as its dashboard describes it: a request URL (query
parameters allowed), custom headers, basic authorization, a batch size (1 sends a single object;
5, 10, 15, 20, 30, 50 or 100 send a JSON array) and the event types to send;
`Content-Type: application/json; charset=UTF-8`. A batch is POSTed again, with back-off, until
a 2xx answers it; only then are its events recorded as acknowledged (the ground truth a test
reconciles with what landed). Events are sent in stream order from the oldest one retained;
`concurrency` batches are in flight at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import ssl
import time
from collections import Counter
from typing import Any

import httpx

from rtds_pipeline.testserver.log import StreamLog, offset_of

AIRSHIP_BATCH_SIZES = (1, 5, 10, 15, 20, 30, 50, 100)
CONTENT_TYPE = "application/json; charset=UTF-8"

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class WebhookOptions:
    url: str
    batch: int = 10
    headers: tuple[tuple[str, str], ...] = ()
    basic: tuple[str, str] | None = None
    types: frozenset[str] | None = None  # None: every type but COMPLIANCE (it has its own stream)
    concurrency: int = 8
    ca_file: str | None = None  # trust this certificate (a self-signed receiver)
    linger_seconds: float = 1.0  # a batch that is not full is sent after waiting this long
    backoff_seconds: float = 0.2  # first retry delay, doubled up to backoff_max_seconds
    backoff_max_seconds: float = 5.0
    timeout_seconds: float = 60.0

    def __post_init__(self) -> None:
        if self.batch not in AIRSHIP_BATCH_SIZES:
            raise ValueError(f"Airship's batch sizes are {AIRSHIP_BATCH_SIZES}, not {self.batch}")

    def admits(self, event_type: str) -> bool:
        return event_type in self.types if self.types is not None else event_type != "COMPLIANCE"


@dataclasses.dataclass
class _Batch:
    first_seq: int
    offsets: list[str]
    ids: list[str]
    lines: list[bytes]


class WebhookSender:
    """Runs on the test server's event loop (the log's thread)."""

    def __init__(self, stream: StreamLog, options: WebhookOptions, *,
                 start_seq: int | None = None) -> None:
        self.stream, self.options = stream, options
        self.start_seq = start_seq  # where a restarted server's sender goes on (None: the start)
        self.acked: set[str] = set()  # offsets of acknowledged events
        self.acked_ids: list[str] = []
        self.batches_acked = 0
        self.attempts = 0
        self.responses: Counter[str] = Counter()  # status code or transport error → count
        self.in_flight = 0
        self.next_seq: int | None = None
        self._partial: list[Any] = []
        self._partial_from = 0  # the seq of the partial batch's first event
        self._unacked: set[int] = set()  # first seq of each batch queued or in flight
        self._queue: asyncio.Queue[_Batch] = asyncio.Queue(maxsize=options.concurrency)

    @property
    def caught_up(self) -> bool:
        """Every event the log holds now was sent and acknowledged."""
        return (self.next_seq is not None and self.next_seq >= self.stream.next_seq
                and not self._partial and self._queue.empty() and self.in_flight == 0)

    def resume_seq(self) -> int | None:
        """Where a sender of a restarted server goes on so that no event goes unacknowledged:
        the first event of the oldest batch not acknowledged yet (its batch is sent again,
        as Airship retries until a 2xx)."""
        if self.next_seq is None:
            return self.start_seq
        pending = [*self._unacked, *([self._partial_from] if self._partial else [])]
        return min(pending, default=self.next_seq)

    def stats(self) -> dict[str, Any]:
        return {"url": _redacted(self.options.url), "batch": self.options.batch,
                "concurrency": self.options.concurrency, "events_acked": len(self.acked_ids),
                "batches_acked": self.batches_acked, "attempts": self.attempts,
                "responses": dict(self.responses), "in_flight": self.in_flight,
                "next_offset": offset_of(self.next_seq) if self.next_seq is not None else None,
                "caught_up": self.caught_up}

    async def run(self) -> None:
        context = ssl.create_default_context(cafile=self.options.ca_file)
        headers = {"Content-Type": CONTENT_TYPE, "User-Agent": "rtds-testserver-webhook",
                   **dict(self.options.headers)}
        async with httpx.AsyncClient(
                verify=context, headers=headers, auth=self.options.basic,
                timeout=self.options.timeout_seconds,
                limits=httpx.Limits(max_connections=self.options.concurrency)) as client:
            workers = [asyncio.create_task(self._post_batches(client))
                       for _ in range(self.options.concurrency)]
            try:
                await self._make_batches()
            finally:
                for w in workers:
                    w.cancel()
                await asyncio.gather(*workers, return_exceptions=True)

    async def _make_batches(self) -> None:
        """Follow the log in stream order; a batch goes when full, or after `linger_seconds`."""
        stream, opts = self.stream, self.options
        self.next_seq = max(stream.first_seq, self.start_seq or 0)
        first_at = 0.0
        while True:
            if self.next_seq >= stream.next_seq:
                wait = (first_at + opts.linger_seconds - time.monotonic() if self._partial
                        else opts.linger_seconds)
                if wait <= 0 or not await stream.wait_for(self.next_seq, wait):
                    if self._partial and time.monotonic() >= first_at + opts.linger_seconds:
                        await self._enqueue()
                continue
            self.next_seq = max(self.next_seq, stream.first_seq)  # retention may have moved on
            seq = self.next_seq
            self.next_seq += 1
            # Per-event accessors: the log keeps its lines compressed (`lines`/`ids`/`types` are
            # copies of everything, for tests).
            if not opts.admits(stream.type_of(seq)):
                continue
            if not self._partial:
                first_at = time.monotonic()
                self._partial_from = seq
            self._partial.append((offset_of(seq), stream.id_of(seq), stream.line(seq)))
            if len(self._partial) == opts.batch:
                await self._enqueue()

    async def _enqueue(self) -> None:
        events, self._partial = self._partial, []
        self._unacked.add(self._partial_from)
        await self._queue.put(_Batch(self._partial_from, [e[0] for e in events], [e[1] for e in events],
                                     [e[2] for e in events]))

    async def _post_batches(self, client: httpx.AsyncClient) -> None:
        opts = self.options
        while True:
            batch = await self._queue.get()
            self.in_flight += 1
            body = (batch.lines[0] if opts.batch == 1
                    else b"[" + b",".join(batch.lines) + b"]")
            delay = opts.backoff_seconds
            try:
                while True:
                    self.attempts += 1
                    try:
                        response = await client.post(opts.url, content=body)
                        outcome = str(response.status_code)
                        ok = 200 <= response.status_code < 300
                    except httpx.HTTPError as exc:
                        outcome, ok = type(exc).__name__, False
                    self.responses[outcome] += 1
                    if ok:
                        break
                    if self.responses[outcome] == 1:
                        log.warning("webhook POST got %s; retrying with back-off", outcome)
                    await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                    delay = min(delay * 2, opts.backoff_max_seconds)
                self.acked.update(batch.offsets)
                self.acked_ids.extend(batch.ids)
                self.batches_acked += 1
                self._unacked.discard(batch.first_seq)
            finally:
                self.in_flight -= 1


def _redacted(url: str) -> str:
    """The URL without its query string (it may hold a token)."""
    return url.split("?", 1)[0]


def parse_header(value: str) -> tuple[str, str]:
    name, sep, val = value.partition(":")
    if not sep or not name.strip():
        raise ValueError(f"a webhook header must be 'Name: value', got {value!r}")
    return name.strip(), val.strip()
