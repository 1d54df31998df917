"""One RTDS HTTP request: auth, 307 session pinning, status classification, gzip, raw bytes.

Never `iter_lines`: JSON strings may hold U+2028 / U+0085, which line iterators split on. This
yields decompressed byte chunks; the window reader splits them on b"\\n".
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import re
import ssl
import zlib
from collections.abc import Iterator
from typing import cast
from urllib.parse import urljoin

import httpx
import orjson
from isal import isal_zlib

from rtds_pipeline.extract.errors import (
    BadRequest,
    ConnectionLost,
    InvalidResponse,
    NoDataYet,
    NotEntitled,
    RedirectLoop,
    RtdsStreamError,
    ServerError,
    TlsFailure,
    TooManyConnections,
    Unauthorized,
)
from rtds_pipeline.protocol.events import (
    ACCEPT,
    COMPLIANCE_PATH,
    EVENTS_PATH,
    IDLE_RECONNECT_SECONDS,
)
from rtds_pipeline.protocol.request import StreamRequest

# isal's stub declares its error an instance of Exception; it is the exception class.
ISAL_ERROR = cast("type[Exception]", isal_zlib.error)

USER_AGENT = "rtds_pipeline/0.1 (+httpx)"
_NOT_ENTITLED = re.compile(r"not entitled\s+([A-Z_,\s]+)")


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """Where and as whom to stream. Secrets are held here only; `repr` hides them."""

    base_url: str
    app_key: str
    access_token: str | None = dataclasses.field(default=None, repr=False)
    master_secret: str | None = dataclasses.field(default=None, repr=False)
    compliance: bool = False

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + (COMPLIANCE_PATH if self.compliance else EVENTS_PATH)

    def headers(self) -> dict[str, str]:
        h = {"Accept": ACCEPT, "Content-Type": "application/json", "X-UA-Appkey": self.app_key,
             "User-Agent": USER_AGENT, "Accept-Encoding": "gzip"}
        if self.compliance:
            if not self.master_secret:
                raise Unauthorized("the compliance stream needs the app's master secret")
            cred = base64.b64encode(f"{self.app_key}:{self.master_secret}".encode()).decode()
            h["Authorization"] = f"Basic {cred}"
        else:
            if not self.access_token:
                raise Unauthorized("the event stream needs an RTDS access token")
            h["Authorization"] = f"Bearer {self.access_token}"
        return h


class StreamConnection:
    """Opens one stream; iterate `chunks()` for decompressed bytes until EOF or an error."""

    def __init__(self, endpoint: Endpoint, request: StreamRequest, *,
                 idle_timeout: float = IDLE_RECONNECT_SECONDS, connect_timeout: float = 10.0,
                 max_redirects: int = 10, client: httpx.Client | None = None) -> None:
        self.endpoint = endpoint
        self.request = request.validate(compliance=endpoint.compliance)
        self.max_redirects = max_redirects
        self._client = client or httpx.Client(
            # The read timeout is the idle watchdog: no byte for this long means reconnect.
            timeout=httpx.Timeout(connect=connect_timeout, read=idle_timeout, write=10.0, pool=10.0),
            follow_redirects=False, verify=_tls_context())
        self._owns_client = client is None
        self.cookie: str | None = None
        self.redirects = 0

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def chunks(self) -> Iterator[bytes]:
        body = self.request.to_json()
        url = self.endpoint.url
        headers = self.endpoint.headers()
        for _ in range(self.max_redirects + 1):
            if self.cookie:
                headers["Cookie"] = self.cookie
            try:
                with self._client.stream("POST", url, content=body, headers=headers) as resp:
                    if resp.status_code == 307:
                        self.redirects += 1
                        self._pin(resp)
                        # The same body again (to Location if given): never a stale replay.
                        url = urljoin(url, resp.headers["location"]) if "location" in resp.headers else url
                        continue
                    if resp.status_code != 200:
                        raise classify(resp.status_code, _read_reason(resp), self.endpoint.app_key,
                                       self.request.resume_offset)
                    _check_content_type(resp)
                    yield from _decoded(resp)
                    return
            except httpx.TimeoutException as exc:
                raise ConnectionLost(f"no data for {self._client.timeout.read:g} s "
                                     f"({type(exc).__name__}); reconnecting") from exc
            except (zlib.error, ISAL_ERROR) as exc:
                raise InvalidResponse(url, 200, f"a body that is not valid gzip ({exc})") from exc
            except httpx.TransportError as exc:
                tls = _tls_cause(exc)
                if tls is not None:
                    raise TlsFailure(url, tls) from exc
                raise ConnectionLost(f"connection lost: {type(exc).__name__}: {exc}") from exc
        raise RedirectLoop(self.max_redirects + 1, url)

    def _pin(self, resp: httpx.Response) -> None:
        set_cookie = resp.headers.get("set-cookie")
        if not set_cookie:
            raise ServerError(307, "redirect without Set-Cookie: cannot pin the session")
        self.cookie = set_cookie.split(";", 1)[0].strip()


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One verifying TLS context per process: loading the CA bundle costs ~50 ms per client."""
    return httpx.create_ssl_context()


def _read_reason(resp: httpx.Response) -> str:
    raw = resp.read()
    if resp.headers.get("content-encoding") == "gzip" or raw[:2] == b"\x1f\x8b":
        try:
            raw = zlib.decompress(raw, 16 + zlib.MAX_WBITS)
        except zlib.error:
            pass
    text = raw.decode("utf-8", "replace").strip()
    try:
        doc = orjson.loads(raw)
        if isinstance(doc, dict) and "error" in doc:
            return str(doc["error"])
    except orjson.JSONDecodeError:
        pass
    return text or resp.reason_phrase


def classify(status: int, reason: str, app_key: str, resume_offset: str | None = None) -> RtdsStreamError:
    if status in (400, 406, 411, 413):
        return BadRequest(reason, status, resume_offset if status == 400 else None)
    if status == 401:
        return Unauthorized(reason)
    if status == 403:
        m = _NOT_ENTITLED.search(reason)
        types = [t.strip() for t in m.group(1).split(",") if t.strip()] if m else []
        return NotEntitled(types, reason)
    if status == 404:
        return NoDataYet(app_key)
    if status == 402:
        return TooManyConnections(reason)
    return ServerError(status, reason)


def _check_content_type(resp: httpx.Response) -> None:
    """RTDS's exact media type is not to be relied on (the spec and its example differ), but it
    is JSON of some kind; an HTML page or plain text is something else answering."""
    ctype = resp.headers.get("content-type", "")
    if ctype and "json" not in ctype.lower():
        raise InvalidResponse(str(resp.url), resp.status_code, f"Content-Type {ctype!r}")


def _tls_cause(exc: BaseException) -> str | None:
    """The TLS error behind an httpx transport error, in words, if there is one."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return f"{type(seen).__name__}: {getattr(seen, 'verify_message', None) or seen}"
        seen = seen.__cause__ or seen.__context__
    text = str(exc)
    return text if "CERTIFICATE_VERIFY_FAILED" in text or "SSL" in text else None


def _decoded(resp: httpx.Response) -> Iterator[bytes]:
    """Raw body bytes, gunzipped when they are gzip whatever Content-Encoding claims. A body
    whose first byte (after blank lines) is `<` is HTML or XML, not NDJSON."""
    decoder = None
    first = True
    sniffed = False
    for data in resp.iter_raw():  # no chunk_size: it would hold back small keep-alives
        if first:
            first = False
            if data[:2] == b"\x1f\x8b":
                # ISA-L's inflate: the largest cost of the reading thread, ~1.9x zlib's speed.
                decoder = isal_zlib.decompressobj(16 + zlib.MAX_WBITS)
        if decoder is not None:
            data = decoder.decompress(data)
        if data:
            if not sniffed:
                head = data.lstrip()
                if head:
                    sniffed = True
                    if head[:1] == b"<":
                        raise InvalidResponse(str(resp.url), resp.status_code,
                                              f"a body starting {bytes(head[:60])!r}")
            yield data
