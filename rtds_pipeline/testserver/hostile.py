"""Hostile peers for fault tests, on loopback only: an HTTP server that answers RTDS requests
the way a broken proxy, a captive portal or a buggy upstream would, and a TCP proxy that can cut
a real server off (an object-store outage) and bring it back.

    with HostileServer(Behaviour.lines(b'{"id":...}\\n' ...)) as srv:   # srv.url as base_url
    with FaultProxy(("127.0.0.1", s3_port)) as proxy: proxy.down(); ...; proxy.up()

Neither is used by the product; the test suite and `python -m bench.chaos` are.
"""

from __future__ import annotations

import dataclasses
import http.server
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

NDJSON = "application/vnd.urbanairship+x-ndjson; version=3;"


@dataclasses.dataclass(frozen=True)
class Behaviour:
    """What the server answers to every POST."""

    status: int = 200
    content_type: str = NDJSON
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    # After `body`: this many bytes of b"x" without a newline, sent in 1 MiB writes.
    endless_bytes: int = 0
    # Then a keep-alive (b"\n"), and the connection held open until the client leaves.
    keepalive: bool = True

    @classmethod
    def lines(cls, body: bytes, **kw: Any) -> Behaviour:
        return cls(body=body, **kw)

    @classmethod
    def html(cls, content_type: str = "text/html; charset=utf-8") -> Behaviour:
        page = b"<!DOCTYPE html><html><body><h1>Sign in to continue</h1>" + b"<p>...</p>\n" * 10
        return cls(content_type=content_type, body=page + b"</body></html>\n", keepalive=False)

    @classmethod
    def bad_gzip(cls) -> Behaviour:
        return cls(headers=(("Content-Encoding", "gzip"),),
                   body=b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + b"\xff\xfe not deflate" * 100,
                   keepalive=False)

    @classmethod
    def redirect_loop(cls) -> Behaviour:
        return cls(status=307, content_type="text/plain",
                   headers=(("Set-Cookie", "node=n1; Path=/"), ("Location", "/api/events")),
                   keepalive=False)


class HostileServer:
    """A threaded HTTP(S) server on 127.0.0.1 answering every POST with one `Behaviour`."""

    def __init__(self, behaviour: Behaviour, tls: ssl.SSLContext | None = None) -> None:
        self.behaviour = behaviour
        self.requests = 0
        self._stopping = threading.Event()
        handler = _handler(self)
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        if tls is not None:
            self._httpd.socket = tls.wrap_socket(self._httpd.socket, server_side=True)
        self._tls = tls is not None
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True,
                                        name="hostile-http")

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        host = host if isinstance(host, str) else host.decode()
        return f"{'https' if self._tls else 'http'}://{host}:{port}"

    def __enter__(self) -> HostileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()


def _handler(server: HostileServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802 — the stdlib's name
            server.requests += 1
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            b = server.behaviour
            self.send_response(b.status)
            self.send_header("Content-Type", b.content_type)
            self.send_header("Connection", "close")  # the body ends when the connection does
            for k, v in b.headers:
                self.send_header(k, v)
            if b.status != 200:
                self.send_header("Content-Length", str(len(b.body)))
            self.end_headers()
            try:
                self.wfile.write(b.body)
                block, left = b"x" * (1 << 20), b.endless_bytes
                while left > 0 and not server._stopping.is_set():
                    self.wfile.write(block[:left])
                    left -= len(block)
                if b.status == 200 and b.keepalive:
                    self.wfile.write(b"\n")
                    self.wfile.flush()
                    # Hold the stream open like an idle RTDS, until the client hangs up.
                    self.connection.settimeout(0.2)
                    while not server._stopping.is_set():
                        try:
                            if not self.connection.recv(1):
                                break
                        except TimeoutError:
                            continue
                        except OSError:
                            break
            except OSError:
                pass  # the client left
            self.close_connection = True

    return Handler


def self_signed_tls(folder: Path) -> ssl.SSLContext:
    """A server TLS context with a fresh self-signed certificate for 127.0.0.1 (openssl CLI)."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx


class FaultProxy:
    """A TCP proxy on 127.0.0.1 in front of `target`. `down()` closes the listener and every
    open connection (clients get refused/reset connections: an outage); `up()` listens again on
    the same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.outages = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FaultProxy:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self._cut()

    def up(self) -> None:
        with self._lock:
            if self._listener is not None:
                return
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            deadline = time.monotonic() + 10
            while True:
                try:
                    s.bind(("127.0.0.1", self.port))
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)  # the old listener's port is being released
            s.listen(64)
            self._listener = s
        threading.Thread(target=self._accept, args=(s,), daemon=True, name="fault-proxy").start()

    def down(self) -> None:
        if self._cut():
            self.outages += 1

    def _cut(self) -> bool:
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._conns = self._conns, set()
        if listener is None:
            return False
        _close(listener)
        for c in conns:
            _close(c)
        return True

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # down()
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _close(client)
                continue
            with self._lock:
                if self._listener is not listener:
                    _close(client)
                    _close(upstream)
                    return
                self._conns |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(1 << 16):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                _close(s)
            with self._lock:
                self._conns -= {src, dst}


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in accept()/recv() on it
    except OSError:
        pass
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass


def lines_of(events: Iterator[dict] | list[dict]) -> bytes:
    import orjson
    return b"".join(orjson.dumps(e) + b"\n" for e in events)

