"""The receiver as an ASGI application (Starlette): one POST route that lands Airship's batches.

Order of checks: method (405), authentication (401), content type and encoding (415), declared
length (413), the body within its deadline and size (408 / 413), then the group commit. Only a
committed window answers 2xx; a body that is not JSON is kept as a dead letter and answered 400
once that dead letter is committed. Anything that keeps the events from being durable is 503,
which Airship retries.

Request logs never show headers, the query string or the body: secrets may live in any of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable

import anyio.to_thread
import numpy as np
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from rtds_pipeline.extract.webhook.auth import Authenticator
from rtds_pipeline.extract.webhook.commit import (
    GroupCommitter,
    NotDurable,
    Overloaded,
    Receipt,
    WindowStats,
    split_body,
)
from rtds_pipeline.extract.webhook.config import WebhookConfig
from rtds_pipeline.lake.storage import Lake

log = logging.getLogger("rtds_pipeline.extract.webhook")

SPLIT_IN_THREAD_BYTES = 1 << 20  # bigger bodies are split off the event loop
SUMMARY_SECONDS = 10.0
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"]


def error(status: int, message: str, headers: dict[str, str] | None = None,
          close: bool = False) -> JSONResponse:
    """Airship's error shape: `{"ok": false, "error": …}`. `close`: the request's body was not
    read to its end, so the connection cannot carry another request."""
    headers = dict(headers or {})
    if close:
        headers["Connection"] = "close"
    return JSONResponse({"ok": False, "error": message}, status_code=status, headers=headers)


class Stats:
    """Counters for the periodic summary line (and /healthz)."""

    def __init__(self) -> None:
        self.statuses: Counter[int] = Counter()
        self.events = 0
        self.dead_letters = 0
        self.windows = 0
        self.last_window: int | None = None
        self.ack_ms: list[float] = []

    def window(self, w: WindowStats) -> None:  # the committer's thread; ints only: no lock needed
        self.windows += 1
        self.last_window = w.window_seq

    def summary(self) -> str:
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(self.statuses.items())) or "none"
        acks = np.asarray(self.ack_ms) if self.ack_ms else None
        lat = (f"ack p50 {np.percentile(acks, 50):.0f} ms, p95 {np.percentile(acks, 95):.0f} ms"
               if acks is not None else "no acks")
        line = (f"requests by status {{{statuses}}}; {self.events:,} events landed, "
                f"{self.dead_letters} dead letters, {self.windows} windows "
                f"(last {self.last_window}); {lat}")
        self.statuses.clear()
        self.ack_ms = []
        self.events = self.dead_letters = self.windows = 0
        return line


def create_app(lake: Lake, source_key: str, config: WebhookConfig,
               on_fatal: Callable[[BaseException], None] | None = None) -> Starlette:
    auth = Authenticator(config)
    stats = Stats()
    state: dict[str, GroupCommitter] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        committer = await anyio.to_thread.run_sync(
            lambda: GroupCommitter(lake, source_key, config.commit, on_fatal=on_fatal,
                                   on_window=stats.window))
        state["committer"] = committer
        log.info("receiving %s events on POST %s into %s (next window %d; %s)", source_key,
                 config.path, lake.url, committer.next_seq,
                 _auth_summary(config) if config.authenticated else "NO authentication: loopback only")
        summary = asyncio.create_task(_summaries(stats))
        try:
            yield
        finally:
            summary.cancel()
            await anyio.to_thread.run_sync(committer.close)
            if any(stats.statuses.values()):
                log.info("%s", stats.summary())

    async def receive_events(request: Request) -> Response:
        t0 = time.monotonic()
        response = await _handle(request)
        stats.statuses[response.status_code] += 1
        if response.status_code < 300:
            stats.ack_ms.append((time.monotonic() - t0) * 1000)
        elif response.status_code != 401:  # 401s are logged with their reason in _handle
            log.warning("%s %s → %d %s", _client(request), request.method, response.status_code,
                        bytes(response.body)[:200].decode("utf-8", "replace"))
        return response

    async def _handle(request: Request) -> Response:
        if request.method != "POST":
            return error(405, f"{config.path} takes POST", {"Allow": "POST"}, close=True)
        problem = auth.check(request.scope["headers"])
        if problem is not None:
            log.warning("%s rejected: %s", _client(request), problem)
            return error(401, "authentication required",
                         {"WWW-Authenticate": auth.challenge} if auth.challenge else None,
                         close=True)
        headers = request.headers
        media, _, params = headers.get("content-type", "").partition(";")
        charset = next((p.split("=", 1)[1].strip().strip('"').lower() for p in params.split(";")
                        if p.strip().lower().startswith("charset=")), "utf-8")
        if media.strip().lower() != "application/json" or charset not in ("utf-8", "utf8"):
            return error(415, "Content-Type must be application/json (Airship sends "
                              f"'application/json; charset=UTF-8'), got "
                              f"{headers.get('content-type', 'none')[:100]!r}", close=True)
        if headers.get("content-encoding", "identity").strip().lower() != "identity":
            return error(415, "compressed request bodies are not accepted (Content-Encoding "
                              f"{headers['content-encoding'][:50]!r})", close=True)
        declared = headers.get("content-length")
        if declared is not None and (not declared.strip().isdigit()):
            return error(400, f"bad Content-Length {declared[:30]!r}", close=True)
        if declared is not None and int(declared) > config.max_body_bytes:
            return error(413, f"the body ({int(declared):,} bytes) is over the limit of "
                              f"{config.max_body_bytes:,} bytes; choose a smaller batch size",
                         close=True)
        try:
            body = await _read_body(request, config)
        except TimeoutError:
            return error(408, f"the body did not arrive within {config.body_timeout:g} s",
                         close=True)
        except _TooLarge:
            return error(413, f"the body is over the limit of {config.max_body_bytes:,} bytes; "
                              "choose a smaller batch size", close=True)
        except ClientDisconnect:
            return error(400, "the client went away before the body ended", close=True)
        split = (await anyio.to_thread.run_sync(split_body, body)
                 if len(body) > SPLIT_IN_THREAD_BYTES else split_body(body))
        try:
            receipt = await asyncio.wait_for(state["committer"].deliver(body, split),
                                             config.ack_timeout)
        except Overloaded as exc:
            return error(503, str(exc), {"Retry-After": "1"})
        except NotDurable as exc:
            return error(503, str(exc))
        except TimeoutError:
            return error(503, f"the events were not committed within {config.ack_timeout:g} s; "
                              "retry (a redelivered batch is deduplicated by id)")
        return _receipt_response(receipt, stats, source_key)

    async def health(request: Request) -> Response:
        committer = state.get("committer")
        return JSONResponse({"ok": committer is not None and committer.fatal is None,
                             "source": source_key,
                             "next_window": committer.next_seq if committer else None,
                             "waiting_requests": committer.pending_requests if committer else None})

    async def not_found(request: Request, exc: Exception) -> Response:
        return error(404, f"no such endpoint {request.url.path}; events go to POST {config.path}")

    return Starlette(
        routes=[Route(config.path, receive_events, methods=ALL_METHODS),  # 405 is ours, in JSON
                Route("/healthz", health, methods=["GET"])],
        exception_handlers={404: not_found}, lifespan=lifespan)


class _TooLarge(Exception):
    pass


async def _read_body(request: Request, config: WebhookConfig) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async with asyncio.timeout(config.body_timeout):
        async for chunk in request.stream():
            size += len(chunk)
            if size > config.max_body_bytes:
                raise _TooLarge
            chunks.append(chunk)
    return b"".join(chunks)


def _receipt_response(r: Receipt, stats: Stats, source_key: str) -> JSONResponse:
    stats.events += r.landed
    stats.dead_letters += r.dead_letters
    if r.refused is not None:
        return JSONResponse({"ok": False, "error": r.refused,
                             "kept_as_dead_letter": f"dead_letter/source={source_key}/"
                                                    f"window-{r.window_seq:010d}.ndjson"},
                            status_code=400)
    return JSONResponse({"ok": True, "received": r.received, "landed": r.landed,
                         "dead_letters": r.dead_letters, "window": r.window_seq})


def _client(request: Request) -> str:
    return f"{request.client.host}:{request.client.port}" if request.client else "?"


def _auth_summary(config: WebhookConfig) -> str:
    """Which checks are on, never their values."""
    parts = (["basic auth"] if config.basic else []) + [
        f"header {name}" for name, _ in config.headers]
    return "requires " + " and ".join(parts)


async def _summaries(stats: Stats) -> None:
    while True:
        await asyncio.sleep(SUMMARY_SECONDS)
        if any(stats.statuses.values()) or stats.windows:
            log.info("last %g s: %s", SUMMARY_SECONDS, stats.summary())
