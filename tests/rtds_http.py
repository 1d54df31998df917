"""A bare RTDS reader for testing the test server itself (independent of the product's client)."""

from __future__ import annotations

import base64
import time
import zlib
from typing import Any

import httpx
import orjson

from rtds_pipeline.protocol.events import ACCEPT

TOKEN = "test-access-token"
APP = "test-app-key"


def headers(token: str = TOKEN, app: str | None = APP, **extra: str) -> dict[str, str]:
    h = {"Accept": ACCEPT, "Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    if app:
        h["X-UA-Appkey"] = app
    h.update(extra)
    return h


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def post(url: str, body: Any, path: str = "/api/events", **kw: Any) -> httpx.Response:
    """A non-streaming POST (for error statuses)."""
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    h = kw.pop("headers", None) or headers()
    with httpx.Client(timeout=10) as c, c.stream("POST", url + path, content=data, headers=h) as r:
        if r.status_code == 200:
            return r
        r.read()
        return r


def read(url: str, body: Any, *, n: int | None = None, seconds: float = 5.0,
         path: str = "/api/events", hdrs: dict[str, str] | None = None,
         keepalives: list[int] | None = None) -> list[dict[str, Any]]:
    """Read events until `n` arrive, `seconds` pass, or the server ends the stream."""
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds
    buf = b""
    with httpx.Client(timeout=httpx.Timeout(10, read=seconds + 5)) as c, c.stream(
        "POST", url + path, content=orjson.dumps(body), headers=hdrs or headers()
    ) as r:
        assert r.status_code == 200, (r.status_code, r.read())
        for data in r.iter_bytes():
            buf += data
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if not line:
                    if keepalives is not None:
                        keepalives.append(1)
                    continue
                events.append(orjson.loads(line))
                if n is not None and len(events) >= n:
                    return events
            if time.monotonic() > deadline:
                break
    return events


def raw_lines(url: str, body: Any, seconds: float) -> tuple[list[bytes], bytes]:
    """Decompressed lines and any trailing partial bytes, reading raw gzip by hand."""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = b""
    deadline = time.monotonic() + seconds
    try:
        with httpx.Client(timeout=httpx.Timeout(10, read=seconds)) as c, c.stream(
            "POST", url + "/api/events", content=orjson.dumps(body), headers=headers()
        ) as r:
            for data in r.iter_raw():
                out += d.decompress(data)
                if time.monotonic() > deadline:
                    break
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.ReadTimeout):
        pass
    *lines, tail = out.split(b"\n")
    return lines, tail
