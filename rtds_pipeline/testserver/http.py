"""Minimal HTTP/1.1 plumbing on asyncio streams: request parsing and response writing.

Hand-rolled rather than a framework because the test server must do what frameworks hide:
write raw pre-compressed gzip chunks, cut a line in half, reset a connection, stall.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import struct
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

import orjson

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 1024 * 1024


class BadHttp(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclasses.dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes

    def cookie(self, name: str) -> str | None:
        for part in self.headers.get("cookie", "").split(";"):
            k, _, v = part.strip().partition("=")
            if k == name:
                return v
        return None


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """The next request on a persistent connection, or None when the client has gone."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    except asyncio.LimitOverrunError:
        raise BadHttp(431, "request headers too large") from None
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, target, _version = lines[0].split(" ", 2)
    except ValueError:
        raise BadHttp(400, f"malformed request line {lines[0]!r}") from None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        # Airship's APIs do not take chunked request bodies (gobyairship's note); neither do we.
        raise BadHttp(411, "chunked request bodies are not supported; send Content-Length")
    length = int(headers.get("content-length", "0") or 0)
    if length > MAX_BODY_BYTES:
        raise BadHttp(413, "request body too large")
    body = await reader.readexactly(length) if length else b""
    url = urlsplit(target)
    return Request(method.upper(), url.path, parse_qs(url.query), headers, body)


def response_head(status: int, headers: list[tuple[str, str]]) -> bytes:
    reason = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Status"
    lines = [f"HTTP/1.1 {status} {reason}"] + [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def simple_response(status: int, body: bytes, content_type: str,
                    extra: list[tuple[str, str]] | None = None) -> bytes:
    headers = [("Content-Type", content_type), ("Content-Length", str(len(body)))]
    return response_head(status, headers + (extra or [])) + body


def json_response(status: int, payload: object, extra: list[tuple[str, str]] | None = None) -> bytes:
    return simple_response(status, orjson.dumps(payload), "application/json", extra)


def error_response(status: int, message: str, extra: list[tuple[str, str]] | None = None) -> bytes:
    """Airship's error shape: {"ok": false, "error": ..., "error_code": ...}."""
    return json_response(status, {"ok": False, "error": message, "error_code": status * 100}, extra)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"


def abort_with_reset(writer: asyncio.StreamWriter) -> None:
    """Close the connection with a TCP RST (what a crashed peer looks like)."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()
