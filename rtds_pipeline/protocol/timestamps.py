"""Fast, exact ISO-8601 timestamps for generated events (epoch milliseconds in, `…sssZ` out)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from functools import lru_cache


@lru_cache(maxsize=8192)
def _minute_prefix(epoch_minute: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:", time.gmtime(epoch_minute * 60))


def iso_ms(epoch_ms: int) -> str:
    """`2026-11-27T15:37:33.123Z` for an epoch-millisecond instant."""
    minute, ms = divmod(epoch_ms, 60_000)
    return f"{_minute_prefix(minute)}{ms // 1000:02d}.{ms % 1000:03d}Z"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def parse_iso_ms(value: str) -> int:
    """Epoch milliseconds of an RTDS timestamp; accepts any number of fraction digits."""
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)
