"""Retrying object-store calls: transient failures (refused or dropped connections, timeouts,
5xx answers) are retried with jittered exponential back-off for a bounded time, then raised as
`ObjectStoreUnavailable`, whose message says what failed, for how long, and what to do.

s3fs retries a few times on its own within about a second; an outage of a few seconds (a
restarted S3 server, a load balancer failing over) outlasts that, so the lake's writes and the
commit are wrapped here. Only idempotent calls are: a whole object PUT again, a listing again.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from typing import TypeVar

import backoff

from rtds_pipeline.settings import STORE_RETRY_SECONDS

T = TypeVar("T")
log = logging.getLogger(__name__)

# Errors that say "the answer is definite": retrying cannot help.
_PERMANENT = (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError,
              NotADirectoryError)


class ObjectStoreUnavailable(Exception):
    """The lake's object store kept failing for the whole retry period."""

    def __init__(self, what: str, seconds: float, attempts: int, cause: BaseException) -> None:
        super().__init__(
            f"the lake's object store failed to {what} for {seconds:g} s ({attempts} attempts; "
            f"last error {type(cause).__name__}: {str(cause)[:300]}). Nothing was committed for "
            "this window, so its events will be read again. Check that the object store is up and "
            "reachable (RTDS_LAKE_URL, RTDS_S3_ENDPOINT_URL), then run again; "
            "RTDS_STORE_RETRY_SECONDS sets how long to keep retrying.")
        self.what, self.seconds, self.attempts = what, seconds, attempts


def is_transient(exc: BaseException) -> bool:
    """Connection refused or dropped, a timeout, or an error answer of the store (s3fs turns
    5xx answers into a plain OSError); not a definite answer such as a missing object."""
    if isinstance(exc, _PERMANENT):
        return False
    if isinstance(exc, OSError | TimeoutError | ConnectionError):
        return True
    try:
        import botocore.exceptions as bex
    except ImportError:  # no S3 support installed: nothing of botocore can be raised
        return False
    return isinstance(exc, bex.ConnectionError | bex.HTTPClientError)


@dataclasses.dataclass(frozen=True)
class StoreRetry:
    """How long to keep retrying one object-store call."""

    seconds: float = STORE_RETRY_SECONDS
    max_delay_s: float = 8.0

    def call(self, what: str, fn: Callable[[], T]) -> T:
        attempts = 0

        def attempt() -> T:
            nonlocal attempts
            attempts += 1
            return fn()

        def giveup(exc: BaseException) -> bool:
            return not is_transient(exc)

        def on_backoff(details: Mapping[str, object]) -> None:  # backoff adds "exception"
            log.warning("object store: %s failed (%s), retrying in %.1f s", what,
                        type(details["exception"]).__name__, details["wait"])

        retried = backoff.on_exception(
            backoff.expo, Exception, max_time=self.seconds, giveup=giveup, factor=0.5,
            max_value=self.max_delay_s, jitter=backoff.full_jitter, on_backoff=on_backoff,
            raise_on_giveup=True, logger=None)(attempt)
        try:
            return retried()
        except Exception as exc:
            if is_transient(exc):
                raise ObjectStoreUnavailable(what, self.seconds, attempts, exc) from exc
            raise
