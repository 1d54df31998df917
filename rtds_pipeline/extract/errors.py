"""What can go wrong on an RTDS stream, each with a message a user can act on.

`RtdsStreamError` subclasses marked `retryable` are handled inside a window (reconnect with
back-off); the others stop the window and surface to the caller.
"""

from __future__ import annotations


class RtdsStreamError(Exception):
    retryable = False
    status: int | None = None


class BadRequest(RtdsStreamError):
    """400 (or 406): the request body or headers are wrong; the server's reason is included."""

    status = 400

    def __init__(self, reason: str, status: int = 400, resume_offset: str | None = None) -> None:
        fix = "Fix the source's filters/subset/start settings; retrying will not help."
        if resume_offset is not None:
            fix = (f"If RTDS refuses the resume offset {resume_offset!r} (expired past retention, "
                   "or not an offset of this stream), move the source's position with "
                   "`rtds-pipeline lake reset-offset SOURCE --to EARLIEST` (or LATEST, or an "
                   "offset RTDS delivered); otherwise " + fix[0].lower() + fix[1:])
        super().__init__(f"RTDS rejected the request (HTTP {status}): {reason}. {fix}")
        self.reason = reason
        self.status = status
        self.resume_offset = resume_offset


class Unauthorized(RtdsStreamError):
    status = 401

    def __init__(self, reason: str) -> None:
        super().__init__(f"RTDS refused the credentials (HTTP 401: {reason}). The access token may "
                         "be wrong or revoked: create a new token in the dashboard's Real-Time Data "
                         "Streaming integration and set it in the source's environment variable.")


class NotEntitled(RtdsStreamError):
    status = 403

    def __init__(self, types: list[str], body: str) -> None:
        listed = ", ".join(types) if types else body
        super().__init__(f"the access token is not entitled to event type(s) {listed} (HTTP 403). "
                         "Remove them from the source's `types` filter or ask Airship to entitle them.")
        self.types = types


class NoDataYet(RtdsStreamError):
    status = 404

    def __init__(self, app_key: str) -> None:
        super().__init__(f"RTDS has no data for app {app_key} yet (HTTP 404); "
                         "nothing to read until the app produces events.")


class TooManyConnections(RtdsStreamError):
    """402: another consumer holds the app's stream slot; back off at least 30 s."""

    retryable = True
    status = 402

    def __init__(self, reason: str) -> None:
        super().__init__(f"RTDS refused a new stream: too many simultaneous connections (HTTP 402: "
                         f"{reason}). Another consumer holds the slot; stop it or wait.")


class RedirectLoop(RtdsStreamError):
    """307 after 307: the session never settles on a node. Not retried: a proxy that drops the
    Cookie or Set-Cookie header, or a misrouted base URL, does not heal by itself."""

    status = 307

    def __init__(self, count: int, url: str = "") -> None:
        super().__init__(f"{url or 'RTDS'} answered HTTP 307 {count} times in a row without "
                         "settling on a node (cause: the pinning cookie is not honoured). Check "
                         "the source's base_url and any proxy between here and Airship (it must "
                         "pass Set-Cookie and Cookie through); not retried.")
        self.url = url


class InvalidResponse(RtdsStreamError):
    """A response that is not an RTDS NDJSON stream (HTML, another content type, broken gzip):
    the URL points at something else, or a proxy answers instead. Not retried."""

    def __init__(self, url: str, status: int, cause: str) -> None:
        super().__init__(f"{url} answered HTTP {status} with {cause}: not an RTDS NDJSON stream. "
                         "Check the source's base_url / region (e.g. https://connect.urbanairship.com) "
                         "and any proxy or captive portal in between; not retried.")
        self.url, self.status, self.cause = url, status, cause


class TlsFailure(RtdsStreamError):
    """The server's TLS certificate could not be verified. Not retried."""

    def __init__(self, url: str, cause: str) -> None:
        super().__init__(f"TLS verification failed for {url} (no HTTP status: {cause}). The server's "
                         "certificate is not trusted (self-signed, expired, another host's, or a "
                         "proxy re-signing TLS): check the source's base_url; behind an "
                         "intercepting proxy, trust its CA. Not retried.")
        self.url, self.cause = url, cause


class ServerError(RtdsStreamError):
    retryable = True

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"RTDS server error HTTP {status}: {reason}; will retry with back-off.")
        self.status = status


class ConnectionLost(RtdsStreamError):
    """Network error, server EOF, or a stream that fell silent past the idle watchdog."""

    retryable = True
