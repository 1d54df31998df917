"""What can go wrong on an RTDS stream, each with a message a user can act on.

`StreamError` subclasses marked `retryable` are handled inside a window (reconnect with
back-off); the others stop the window and surface to the caller.
"""

from __future__ import annotations


class StreamError(Exception):
    retryable = False
    status: int | None = None


class BadRequest(StreamError):
    """400 (or 406): the request body or headers are wrong; the server's reason is included."""

    status = 400

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(f"RTDS rejected the request (HTTP {status}): {reason}. "
                         "Fix the source's filters/subset/start settings; retrying will not help.")
        self.reason = reason
        self.status = status


class Unauthorized(StreamError):
    status = 401

    def __init__(self, reason: str) -> None:
        super().__init__(f"RTDS refused the credentials (HTTP 401: {reason}). The access token may "
                         "be wrong or revoked: create a new token in the dashboard's Real-Time Data "
                         "Streaming integration and set it in the source's environment variable.")


class NotEntitled(StreamError):
    status = 403

    def __init__(self, types: list[str], body: str) -> None:
        listed = ", ".join(types) if types else body
        super().__init__(f"the access token is not entitled to event type(s) {listed} (HTTP 403). "
                         "Remove them from the source's `types` filter or ask Airship to entitle them.")
        self.types = types


class NoDataYet(StreamError):
    status = 404

    def __init__(self, app_key: str) -> None:
        super().__init__(f"RTDS has no data for app {app_key} yet (HTTP 404); "
                         "nothing to read until the app produces events.")


class TooManyConnections(StreamError):
    """402: another consumer holds the app's stream slot; back off at least 30 s."""

    retryable = True
    status = 402

    def __init__(self, reason: str) -> None:
        super().__init__(f"RTDS refused a new stream: too many simultaneous connections (HTTP 402: "
                         f"{reason}). Another consumer holds the slot; stop it or wait.")


class TooManyRedirects(StreamError):
    retryable = True

    def __init__(self, count: int) -> None:
        super().__init__(f"RTDS answered 307 {count} times in a row without settling on a node; "
                         "will retry with back-off.")


class ServerError(StreamError):
    retryable = True

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"RTDS server error HTTP {status}: {reason}; will retry with back-off.")
        self.status = status


class ConnectionLost(StreamError):
    """Network error, server EOF, or a stream that fell silent past the idle watchdog."""

    retryable = True
