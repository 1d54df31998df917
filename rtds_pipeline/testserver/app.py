"""The RTDS test server: Airship's two streaming endpoints, faithful to the protocol, plus a small
loopback admin API for faults, revocation and ground truth.

Run it from the command line (`rtds-pipeline testserver`) or in-process:

    with TestServer(backlog=10_000) as server:
        ...  # server.url, server.arm(Fault("eof", after=100)), server.ground_truth()
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import os
import pickle
import struct
import sys
import threading
import time
import uuid
import zlib
from pathlib import Path
from typing import Any

import orjson

from rtds_pipeline.protocol.events import ACCEPT, COMPLIANCE_PATH, EVENTS_PATH, OFFSET_UPDATE
from rtds_pipeline.protocol.loopback import TEST_SERVER_PORT
from rtds_pipeline.protocol.request import RequestError, StreamRequest, parse_request
from rtds_pipeline.protocol.timestamps import iso_ms, now_ms
from rtds_pipeline.testserver import http
from rtds_pipeline.testserver.config import (
    SAMPLE_CREDENTIAL,
    App,
    ConfigError,
    Fault,
    Faults,
    ServerConfig,
    Token,
    default_config,
)
from rtds_pipeline.testserver.log import (
    GENERATOR_VERSION,
    SEGMENT_EVENTS,
    Quirks,
    StreamLog,
    offset_of,
    seq_of,
    write_atomically,
)
from rtds_pipeline.testserver.matching import compile_filters, needs_body, subset_admits
from rtds_pipeline.testserver.webhook_sender import WebhookOptions, WebhookSender

GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
COOKIE_NAME = "SRVID"
WRITE_BATCH_BYTES = 256 * 1024
SLOW_BATCH_EVENTS = 2048
DEFAULT_BACKLOG_SPAN_MS = 3 * 24 * 3_600_000
OFFSET_RESERVE = 1_000_000  # offsets reserved ahead in the state file, per app
STATE_SAVE_SECONDS = 30.0  # how often a server with a state dir saves its streams (and at stop)


@dataclasses.dataclass
class ServerOptions:
    host: str = "127.0.0.1"
    port: int = TEST_SERVER_PORT
    seed: int = 0
    rate: float = 0.0  # live events per second per app
    backlog: int = 0
    backlog_span_ms: int = DEFAULT_BACKLOG_SPAN_MS
    quirks: Quirks = dataclasses.field(default_factory=Quirks)
    retention_events: int | None = None
    retention_bytes: int | None = None
    # Channels living in the app: the demo's 50k-event, 3-day backlog gives them ~2 events a
    # day each, a shop's real rhythm (a push a day, a session a week).
    population: int = 8000
    cache_dir: Path | None = None
    empty_apps: frozenset[str] = frozenset()  # apps that have no data yet (404)
    # Where the streams survive a restart: a restarted server serves the events it had retained,
    # at the same offsets, and goes on live from there (the backlog is built on the first start
    # only). Offsets are also reserved ahead there, so a stream started anew (state of another
    # generator version) goes on after every offset an earlier life may have served.
    state_dir: Path | None = None


class TestServer:
    """An RTDS-compatible server on loopback. Thread-safe start/stop; state lives on its loop."""

    __test__ = False  # not a pytest class

    def __init__(self, options: ServerOptions | None = None, config: ServerConfig | None = None,
                 **kw: Any) -> None:
        self.options = options or ServerOptions(**kw)
        self.config = config or default_config()
        self.faults = Faults()
        self.node_epoch = 1
        self.logs: dict[str, StreamLog] = {}
        self._reserved = self._load_reservations()
        for i, key in enumerate(self.config.apps):
            self.logs[key] = StreamLog(
                self.options.seed + i, self.options.quirks,
                retention_events=self.options.retention_events,
                retention_bytes=self.options.retention_bytes,
                population=self.options.population, first_seq=self._reserved.get(key, 0))
        self._webhook_from: int | None = None  # where a restored webhook sender goes on
        self._save_lock = threading.Lock()
        self.restored = self._restore_state()  # the streams came from the state dir
        self._saved_at_seq: dict[str, int] = {k: log.next_seq for k, log in self.logs.items()}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._writers: set[asyncio.StreamWriter] = set()
        self.webhook: WebhookSender | None = None
        self._webhook_options: WebhookOptions | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        return f"http://{self.options.host}:{self.port}"

    @property
    def port(self) -> int:
        if self._server is None:
            return self.options.port
        return self._server.sockets[0].getsockname()[1]

    def build_backlog(self) -> None:
        """The backlog of each app that has no stream yet (a restored one keeps its own)."""
        self._reserve_offsets()
        built = False
        if self.options.backlog:
            for key, log in self.logs.items():
                if key not in self.options.empty_apps and not log.ever_had_data:
                    log.build_backlog(self.options.backlog, self.options.backlog_span_ms,
                                      self.options.cache_dir)
                    built = True
        self._reserve_offsets()
        if built:
            self.save_state()

    # ------------------------------------------------------------------ state across restarts
    def _state_file(self) -> Path | None:
        return self.options.state_dir / "streams.pickle" if self.options.state_dir else None

    def _restore_state(self) -> bool:
        """The streams a previous life saved in the state dir, as they were (events, offsets,
        duplicates still due, the generator mid-story), with retention applied since."""
        path = self._state_file()
        if path is None or not path.exists():
            return False
        try:
            with path.open("rb") as f:
                saved = pickle.load(f)
            if saved.get("version") != GENERATOR_VERSION:
                raise ValueError(f"saved by generator version {saved.get('version')}, "
                                 f"this is {GENERATOR_VERSION}")
        except Exception as exc:  # unreadable or of another version: a new stream, later offsets
            print(f"test server: not restoring the streams in {path} ({exc}); starting new "
                  "streams after the offsets they used (delete the state dir to start from "
                  "scratch)", file=sys.stderr, flush=True)
            return False
        for key, state in saved["logs"].items():
            if key in self.logs:
                self.logs[key].restore(state)
                self.logs[key].enforce_retention(now_ms())
        self._webhook_from = saved.get("webhook_next_seq")
        return True

    def _state_bytes(self) -> bytes:
        """Every stream, pickled. On the server's loop: the streams change only there."""
        self._saved_at_seq = {k: log.next_seq for k, log in self.logs.items()}
        return pickle.dumps({"version": GENERATOR_VERSION, "saved_at": now_ms(),
                             "logs": {key: log.state() for key, log in self.logs.items()},
                             "webhook_next_seq": self.webhook.resume_seq() if self.webhook
                             else None}, pickle.HIGHEST_PROTOCOL)

    def _write_state(self, data: bytes) -> None:
        """Durably and all at once; one write at a time (the last one started wins)."""
        path = self._state_file()
        if path is not None:
            with self._save_lock:
                write_atomically(path, data)

    def save_state(self) -> None:
        """Save every stream to the state dir. On the server's loop, or before it runs."""
        if self._state_file() is not None:
            self._write_state(self._state_bytes())

    async def _save_periodically(self) -> None:
        """A crash loses at most STATE_SAVE_SECONDS of the streams (a clean stop loses nothing):
        the restored generator then makes the lost events again, with the same ids. Pickled on
        the loop, written by a thread."""
        while True:
            await asyncio.sleep(STATE_SAVE_SECONDS)
            if any(log.next_seq != self._saved_at_seq.get(k) for k, log in self.logs.items()):
                await asyncio.to_thread(self._write_state, self._state_bytes())

    def _offsets_file(self) -> Path | None:
        return self.options.state_dir / "offsets.json" if self.options.state_dir else None

    def _load_reservations(self) -> dict[str, int]:
        path = self._offsets_file()
        if path is None or not path.exists():
            return {}
        try:
            return {k: int(v) for k, v in orjson.loads(path.read_bytes()).items()}
        except (ValueError, TypeError, AttributeError) as exc:
            raise ConfigError(f"{path} is not a map of app key to offset sequence ({exc}); "
                              "delete it to start offsets from scratch") from None

    def _reserve_offsets(self) -> None:
        """Persist, per app, a sequence number above every one handed out: offsets are reserved
        in blocks written ahead of use (fsynced), so even a SIGKILL cannot make them go back."""
        path = self._offsets_file()
        if path is None:
            return
        if all(log.next_seq + OFFSET_RESERVE // 2 <= self._reserved.get(key, -1)
               for key, log in self.logs.items()):
            return
        self._reserved = {key: log.next_seq + OFFSET_RESERVE for key, log in self.logs.items()}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        with tmp.open("wb") as f:
            f.write(orjson.dumps(self._reserved))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    async def serve(self) -> None:
        """Serve until `stop()`; the coroutine the CLI runs."""
        self._loop = asyncio.get_running_loop()
        self.build_backlog()
        self._server = await asyncio.start_server(
            self._connection, self.options.host, self.options.port, limit=http.MAX_HEADER_BYTES)
        live = asyncio.create_task(self._live()) if self.options.rate > 0 else None
        sender = None
        if self._webhook_options is not None:
            self.webhook = WebhookSender(self.log(), self._webhook_options,
                                         start_seq=self._webhook_from)
            sender = asyncio.create_task(self.webhook.run())
        saver = asyncio.create_task(self._save_periodically()) if self.options.state_dir else None
        self._ready.set()
        try:
            while not self._stopping.is_set():
                await asyncio.sleep(0.1)
        finally:
            for task in (live, saver):
                if task:
                    task.cancel()
            if sender:
                sender.cancel()
                await asyncio.gather(sender, return_exceptions=True)
            self._server.close()
            for w in list(self._writers):
                w.transport.abort()
            await self._server.wait_closed()
            if saver:
                await asyncio.gather(saver, return_exceptions=True)
                self.save_state()

    def send_webhooks(self, options: WebhookOptions) -> TestServer:
        """Also POST the default app's events as Airship's webhook integration does, from
        `serve()`/`start()` on (call before)."""
        self._webhook_options = options
        return self

    def start(self) -> TestServer:
        """Run in a background thread; returns once the port is open."""
        self._thread = threading.Thread(target=lambda: asyncio.run(self.serve()), daemon=True,
                                        name="rtds-testserver")
        self._thread.start()
        if not self._ready.wait(600):
            raise RuntimeError("test server did not start within 600 s")
        return self

    def request_stop(self) -> None:
        """Make `serve()` return (from a signal handler, say); it saves its state on the way."""
        self._stopping.set()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread:
            self._thread.join(10)

    def __enter__(self) -> TestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def call(self, fn: Any, *args: Any) -> Any:
        """Run `fn(*args)` on the server's loop and return its result (tests, admin, CLI)."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if self._loop is None or running is self._loop:
            return fn(*args)

        async def run() -> Any:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(60)

    # ------------------------------------------------------------------ admin (Python API)
    def arm(self, fault: Fault) -> None:
        self.call(self.faults.arm, fault)

    def clear_faults(self) -> None:
        self.call(self.faults.clear)

    def revoke(self, token: str) -> None:
        def _revoke() -> None:
            for app in self.config.apps.values():
                if token in app.tokens:
                    app.tokens[token].revoked = True
        self.call(_revoke)

    def generate(self, count: int, app_key: str | None = None) -> None:
        """Append `count` live events (processed now) to an app's stream."""
        def _generate() -> None:
            self.log(app_key).generate_live(count)
            self._reserve_offsets()
        self.call(_generate)

    def rotate_node(self) -> None:
        """Make every pinning cookie handed out so far stale."""
        def _rotate() -> None:
            self.node_epoch += 1
        self.call(_rotate)

    def log(self, app_key: str | None = None) -> StreamLog:
        return self.logs[app_key or self.config.default_app.app_key]

    def ground_truth(self, app_key: str | None = None) -> list[dict[str, Any]]:
        return self.call(lambda: list(self._ground_truth(app_key)))

    def _ground_truth(self, app_key: str | None) -> Any:
        """The log's events; with a webhook sender, `acked`: a 2xx answered its batch."""
        rows = self.log(app_key).ground_truth()
        if self.webhook is None or self.log(app_key) is not self.webhook.stream:
            return rows
        acked = self.webhook.acked
        return ({**r, "acked": r["offset"] in acked} for r in rows)

    # ------------------------------------------------------------------ live mode
    async def _live(self) -> None:
        tick = 0.05
        carry = 0.0
        while True:
            await asyncio.sleep(tick)
            carry += self.options.rate * tick
            n = int(carry)
            if n:
                carry -= n
                for key, log in self.logs.items():
                    if key not in self.options.empty_apps:
                        log.generate_live(n)
                self._reserve_offsets()

    # ------------------------------------------------------------------ connections
    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                try:
                    req = await http.read_request(reader)
                except http.BadHttp as exc:
                    writer.write(http.error_response(exc.status, str(exc)))
                    break
                if req is None:
                    break
                keep_open = await self._dispatch(req, writer)
                if not keep_open or writer.is_closing():
                    break
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()

    async def _dispatch(self, req: http.Request, writer: asyncio.StreamWriter) -> bool:
        path = req.path.rstrip("/") or "/"
        if path in (EVENTS_PATH, COMPLIANCE_PATH):
            if req.method != "POST":
                writer.write(http.error_response(405, f"{path} takes POST",
                                                 [("Allow", "POST")]))
                return True
            return await self._stream_request(req, writer, compliance=path == COMPLIANCE_PATH)
        if path.startswith("/admin/"):
            writer.write(self._admin(req, path))
            return True
        writer.write(http.error_response(404, f"no such endpoint {req.path}; RTDS serves "
                                              f"POST {EVENTS_PATH} and POST {COMPLIANCE_PATH}"))
        return True

    def _admin(self, req: http.Request, path: str) -> bytes:
        """Loopback admin API: faults, revocation, generation, ground truth, stats."""
        try:
            body = orjson.loads(req.body) if req.body.strip() else {}
            if path == "/admin/faults" and req.method == "POST":
                for f in body if isinstance(body, list) else [body]:
                    self.faults.arm(Fault.from_dict(f))
                return http.json_response(200, {"armed": [dataclasses.asdict(f) for f in self.faults.armed]})
            if path == "/admin/faults" and req.method == "DELETE":
                self.faults.clear()
                return http.json_response(200, {"armed": []})
            if path == "/admin/revoke" and req.method == "POST":
                self.revoke(body["token"])
                return http.json_response(200, {"revoked": body["token"]})
            if path == "/admin/generate" and req.method == "POST":
                self.log(body.get("app")).generate_live(int(body.get("count", 1)))
                self._reserve_offsets()
                return http.json_response(200, {"next_offset": offset_of(self.log(body.get("app")).next_seq)})
            if path == "/admin/rotate-node" and req.method == "POST":
                self.node_epoch += 1
                return http.json_response(200, {"node": f"node-{self.node_epoch}"})
            if path == "/admin/ground-truth" and req.method == "GET":
                apps = req.query.get("app")
                app = apps[0] if apps else None
                body = b"".join(orjson.dumps(r) + b"\n" for r in self._ground_truth(app))
                return http.simple_response(200, body, "application/x-ndjson")
            if path == "/admin/webhook" and req.method == "GET":
                if self.webhook is None:
                    return http.error_response(404, "no webhook sender: start with --webhook-url")
                return http.json_response(200, self.webhook.stats())
            if path == "/admin/stats" and req.method == "GET":
                return http.json_response(200, {key: {
                    "events": len(log), "first_offset": offset_of(log.first_seq) if len(log) else None,
                    "last_offset": offset_of(log.next_seq - 1) if len(log) else None,
                    "active_streams": self.config.apps[key].active_streams,
                } for key, log in self.logs.items()})
        except (ConfigError, KeyError, ValueError, TypeError) as exc:
            return http.error_response(400, f"bad admin request: {exc}")
        return http.error_response(404, f"no admin endpoint {req.method} {path}")

    # ------------------------------------------------------------------ the RTDS endpoints
    def _authenticate(self, req: http.Request,
                      compliance: bool) -> tuple[App, Token | None] | str:
        """The app and token the request authenticates as, or why it is refused (HTTP 401)."""
        auth = req.headers.get("authorization", "")
        app_key = req.headers.get("x-ua-appkey")
        scheme, _, cred = auth.partition(" ")
        scheme = scheme.lower()
        if scheme == "basic":
            try:
                user, _, password = base64.b64decode(cred).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return "malformed basic credentials"
            if (user, password) == SAMPLE_CREDENTIAL and not compliance:
                return self.config.default_app, None
            if not compliance:
                return ("basic auth is accepted only on /api/events/general; "
                        "use 'Authorization: Bearer <token>' with X-UA-Appkey")
            app = self.config.apps.get(user)
            if app is None or password != app.master_secret:
                return "invalid app key or master secret"
            if app_key is not None and app_key != app.app_key:
                return "X-UA-Appkey does not match the credentials"
            return app, None
        if scheme == "bearer":
            if compliance:
                return ("the compliance endpoint takes basic auth "
                        "(app key : master secret), not a bearer token")
            if not app_key:
                return "missing X-UA-Appkey header"
            app = self.config.apps.get(app_key)
            token = app.tokens.get(cred) if app else None
            if app is None or token is None:
                return "invalid access token for this app key"
            if token.revoked:
                return "access token has been revoked"
            return app, token
        return "missing Authorization header"

    def _redirect_needed(self, req: http.Request) -> bool:
        mode = self.config.redirect
        cookie = req.cookie(COOKIE_NAME)
        if mode == "never":
            return False
        if mode == "always":
            return True
        if cookie is None:
            return True
        return mode == "stale" and cookie != f"node-{self.node_epoch}"

    async def _stream_request(self, req: http.Request, writer: asyncio.StreamWriter,
                              compliance: bool) -> bool:
        auth = self._authenticate(req, compliance)
        if isinstance(auth, str):
            writer.write(http.error_response(401, auth, [("WWW-Authenticate", "Bearer")]))
            return True
        app, token = auth
        accept = req.headers.get("accept", "").replace(" ", "")
        if "application/vnd.urbanairship+x-ndjson" not in accept or "version=3" not in accept:
            writer.write(http.error_response(
                406, f"Accept must be '{ACCEPT}' (got {req.headers.get('accept')!r})"))
            return True
        try:
            request = parse_request(req.body, compliance=compliance, strict=self.config.strict)
        except RequestError as exc:
            writer.write(http.error_response(400, str(exc)))
            return True
        log = self.logs[app.app_key]
        if request.resume_offset is not None and seq_of(request.resume_offset) is None:
            writer.write(http.error_response(
                400, f"resume_offset {request.resume_offset!r} is not an offset of this stream"))
            return True
        fault = self.faults.take(status=True)
        if fault is not None:
            writer.write(http.error_response(fault.status, f"injected fault: HTTP {fault.status}"))
            return True
        if self._redirect_needed(req):
            extra = [("Set-Cookie", f"{COOKIE_NAME}=node-{self.node_epoch}; Path=/; HttpOnly")]
            if self.config.redirect_location:
                extra.append(("Location", self.url + req.path))
            writer.write(http.simple_response(307, b"", "text/plain", extra))
            return True
        if token is not None and token.types is not None:
            asked = {t.upper() for f in request.filters for t in f.get("types", ())}
            missing = sorted(asked - token.types)
            if missing:
                body = f"Requested event types to which client is not entitled {','.join(missing)}"
                writer.write(http.simple_response(403, body.encode(), "text/plain"))
                return True
        if app.active_streams >= app.max_streams:
            writer.write(http.error_response(
                402, f"too many simultaneous connections for app {app.app_key} "
                     f"(limit {app.max_streams}); close another consumer or wait"))
            return True
        if not log.ever_had_data:
            writer.write(http.error_response(404, f"no data for app {app.app_key} yet"))
            return True
        if request.resume_offset is not None and self.config.expired_offset == "error":
            seq = seq_of(request.resume_offset)
            assert seq is not None
            if seq + 1 < log.first_seq:
                writer.write(http.error_response(
                    400, f"resume_offset {request.resume_offset} is older than the retention "
                         f"window (oldest retained offset {offset_of(log.first_seq)}); "
                         f"restart with start=EARLIEST"))
                return True
        app.active_streams += 1
        try:
            await _Stream(self, writer, log, app, token, request, compliance,
                          self.faults.take(status=False)).run()
        finally:
            app.active_streams -= 1
        return False


class _Stream:
    """One open 200 response: gzip, chunked, endless NDJSON with keep-alives and faults."""

    def __init__(self, server: TestServer, writer: asyncio.StreamWriter, log: StreamLog, app: App,
                 token: Token | None, request: StreamRequest, compliance: bool,
                 fault: Fault | None) -> None:
        self.server, self.writer, self.log, self.token = server, writer, log, token
        self.request, self.compliance, self.fault = request, compliance, fault
        self.seq = log.start_seq(request.start, request.resume_offset)
        self.served = 0
        self.crc = 0
        self.size = 0
        self.compressor: Any = None
        self.written_at = time.monotonic()  # when bytes of the body last went out
        self.filters = compile_filters(request.filters)
        self.parse = needs_body(request)
        self.types_allowed = token.types if token else None
        asked = {t.upper() for f in request.filters for t in f.get("types", ())}
        self.include_compliance = compliance or "COMPLIANCE" in asked
        # Unfiltered readers of /api/events get whole pre-compressed segments.
        self.fast = (not request.filters and request.subset is None and self.types_allowed is None
                     and not compliance and fault is None)

    async def run(self) -> None:
        w = self.writer
        w.write(http.response_head(200, [
            ("Content-Type", ACCEPT), ("Content-Encoding", "gzip"),
            ("Transfer-Encoding", "chunked"), ("Cache-Control", "no-cache")]))
        w.write(http.chunk(GZIP_HEADER))
        keepalive = self.server.config.keepalive_seconds
        while not self.server._stopping.is_set() and not w.is_closing():
            if self.token is not None and self.token.revoked:
                return self._finish()
            if self.seq >= self.log.next_seq:
                await w.drain()
                # A keep-alive once nothing was written for `keepalive` seconds, new events or
                # not: a filtered reader (the compliance stream) skips most of them.
                quiet = keepalive - (time.monotonic() - self.written_at)
                if quiet <= 0 or not await self.log.wait_for(self.seq, quiet):
                    self._send_keepalive()
                continue
            self.seq = max(self.seq, self.log.first_seq)  # retention may have moved on
            if self.fast and self.seq % SEGMENT_EVENTS == 0 and self._write_segments():
                pass
            elif await self._write_lines():
                return
            await w.drain()

    def _write_segments(self) -> bool:
        parts = []
        size = 0
        while size < WRITE_BATCH_BYTES:
            seg = self.log.segment(self.seq // SEGMENT_EVENTS)
            if seg is None:
                break
            parts.append(seg)
            size += len(seg)
            self.seq += SEGMENT_EVENTS
        if not parts:
            return False
        self.compressor = None  # the next on-the-fly block must not refer back across segments
        self.writer.write(http.chunk(b"".join(parts)))
        self.written_at = time.monotonic()
        return True

    async def _write_lines(self) -> bool:
        """Serve events one by one (filters, subsets, faults). True when the stream has ended."""
        log, out = self.log, list[bytes]()
        end = min(log.next_seq, self.seq + SLOW_BATCH_EVENTS)
        if self.fast:
            end = min(end, (self.seq // SEGMENT_EVENTS + 1) * SEGMENT_EVENTS)
        subset = self.request.subset
        while self.seq < end:
            seq = self.seq
            self.seq += 1
            etype = log.type_of(seq)
            if etype == "COMPLIANCE" and not self.include_compliance:
                continue
            if self.compliance and etype != "COMPLIANCE":
                continue
            if self.types_allowed is not None and etype not in self.types_allowed:
                continue
            if subset is not None and not subset_admits(subset, log.id_of(seq)):
                continue
            line = log.line(seq)
            if self.request.filters and not self.filters(
                    etype, orjson.loads(line) if self.parse else None):
                continue
            if self.fault is not None and self.served >= self.fault.after:
                self._emit(out)
                return await self._fire_fault(self.fault, line)
            out.append(line)
            self.served += 1
        self._emit(out)
        return False

    def _emit(self, lines: list[bytes]) -> None:
        if lines:
            self._write_raw(b"\n".join(lines) + b"\n")

    def _write_raw(self, raw: bytes) -> None:
        if self.compressor is None:
            self.compressor = zlib.compressobj(1, zlib.DEFLATED, -15)
        if self.fault is not None and self.fault.kind == "eof":
            self.crc = zlib.crc32(raw, self.crc)
            self.size += len(raw)
        data = self.compressor.compress(raw) + self.compressor.flush(zlib.Z_SYNC_FLUSH)
        self.writer.write(http.chunk(data))
        self.written_at = time.monotonic()

    def _send_keepalive(self) -> None:
        if self.request.enable_offset_updates:
            # Offset of the last event considered for inclusion, whether or not it passed; a
            # resume point beyond the head considers nothing past the head.
            last = min(max(self.seq, self.log.first_seq), self.log.next_seq) - 1
            if last >= 0:
                now = iso_ms(now_ms())
                self._write_raw(orjson.dumps({
                    "id": str(uuid.uuid4()), "type": OFFSET_UPDATE, "offset": offset_of(last),
                    "occurred": now, "processed": now}) + b"\n")
                return
        self._write_raw(b"\n")

    async def _fire_fault(self, fault: Fault, next_line: bytes) -> bool:
        kind, w = fault.kind, self.writer
        if kind == "eof":
            self._finish()
            return True
        if kind == "reset":
            await w.drain()
            http.abort_with_reset(w)
            return True
        if kind == "cut_line":
            self._write_raw(next_line[: len(next_line) // 2])
            await w.drain()
            http.abort_with_reset(w)
            return True
        if kind == "malformed":
            self._write_raw(b'{"id": "not-json", "type": "OPEN", "offset": \x01 broken\n')
            self.fault = None
            self.seq -= 1  # serve the held-back event next
            return False
        if kind == "stall":
            await w.drain()
            await asyncio.sleep(fault.seconds)
            self.fault = None
            self.seq -= 1
            return False
        raise ConfigError(f"unknown stream fault {kind}")

    def _finish(self) -> None:
        """A clean server-side end of the response: deflate end, gzip trailer, last chunk."""
        tail = (self.compressor or zlib.compressobj(1, zlib.DEFLATED, -15)).flush(zlib.Z_FINISH)
        if self.fault is not None and self.fault.kind == "eof":
            tail += struct.pack("<II", self.crc & 0xFFFFFFFF, self.size & 0xFFFFFFFF)
        self.writer.write(http.chunk(tail) + http.LAST_CHUNK)
