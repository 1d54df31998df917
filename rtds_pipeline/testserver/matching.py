"""Which events a request receives: filters (OR of AND-objects), JSON predicates, subsets.

Semantics from the spec: an event passes when it passes any filter object; it passes an object
when it passes every key in it. `latency` compares `occurred` with the time of serving.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable
from typing import Any

from rtds_pipeline.protocol.request import StreamRequest
from rtds_pipeline.protocol.timestamps import now_ms, parse_iso_ms

_MISSING = object()
Event = dict[str, Any]


def partition_of(event_id: str, count: int) -> int:
    """The PARTITION an event id falls in; copies of an event share their id, so their partition."""
    return zlib.crc32(event_id.encode()) % count


def sampled(event_id: str, proportion: float) -> bool:
    """SAMPLE by a hash of the id: reproducible across reconnects, copies go together."""
    return (zlib.crc32(b"sample:" + event_id.encode()) & 0xFFFFFFFF) / 2**32 < proportion


def subset_admits(subset: dict[str, Any] | None, event_id: str) -> bool:
    if subset is None:
        return True
    if subset["type"] == "PARTITION":
        return partition_of(event_id, subset["count"]) == subset["selection"]
    return sampled(event_id, subset["proportion"])


def needs_body(request: StreamRequest) -> bool:
    """Whether matching needs the parsed event (anything beyond `types` and the subset)."""
    return any(set(f) - {"types"} for f in request.filters)


def compile_filters(filters: tuple[dict[str, Any], ...]) -> Callable[[str, Event | None], bool]:
    """A function (type, parsed event or None) -> passes. Parsed event needed iff needs_body."""
    if not filters:
        return lambda etype, ev: True
    tests = [_compile_one(f) for f in filters]
    return lambda etype, ev: any(t(etype, ev) for t in tests)


def _compile_one(flt: dict[str, Any]) -> Callable[[str, Event | None], bool]:
    types = {t.upper() for t in flt["types"]} if "types" in flt else None
    checks: list[Callable[[Event], bool]] = []  # on the parsed event
    if "device_types" in flt:
        dts = {d.upper() for d in flt["device_types"]}
        checks.append(lambda ev: (ev.get("device") or {}).get("device_type") in dts)
    if "notifications" in flt:
        wanted = flt["notifications"]
        wanted = wanted if isinstance(wanted, list) else [wanted]
        checks.append(lambda ev: any(_about_push(ev, n) for n in wanted))
    if "devices" in flt:
        devices = flt["devices"]
        checks.append(lambda ev: any(_device_matches(ev, d) for d in devices))
    if "users" in flt:
        users = flt["users"]
        checks.append(lambda ev: any(_user_matches(ev, u) for u in users))
    if "latency" in flt:
        latency = flt["latency"]
        checks.append(lambda ev: now_ms() - parse_iso_ms(ev["occurred"]) <= latency)
    if "predicates" in flt:
        preds = flt["predicates"]
        preds = preds if isinstance(preds, list) else [preds]
        checks.append(lambda ev: all(evaluate(p, ev) for p in preds))

    def admits(etype: str, ev: Event | None) -> bool:
        if types is not None and etype not in types:
            return False
        if not checks:
            return True
        if ev is None:
            raise ValueError(f"filter {flt} matches on the event itself: parse it first "
                             "(needs_body)")
        return all(c(ev) for c in checks)

    return admits


def _about_push(ev: Event, sel: dict[str, str]) -> bool:
    body = ev.get("body") or {}
    (key, value), = sel.items()
    if body.get(key) == value:
        return True
    for nested in ("triggering_push", "replacing_push"):
        if (body.get(nested) or {}).get(key) == value:
            return True
    return False


def _device_matches(ev: Event, sel: dict[str, str]) -> bool:
    dev = ev.get("device") or {}
    (key, value), = sel.items()
    if key in ("channel", "ios_channel", "android_channel", "amazon_channel"):
        return dev.get("channel") == value or dev.get(key) == value
    return dev.get("named_user_id") == value or (ev.get("user") or {}).get(key) == value


def _user_matches(ev: Event, sel: dict[str, str]) -> bool:
    (key, value), = sel.items()
    user = ev.get("user") or {}
    return user.get(key) == value or (key == "named_user_id" and
                                      (ev.get("device") or {}).get("named_user_id") == value)


def evaluate(pred: dict[str, Any], node: Any) -> bool:
    """Evaluate a JSON predicate against an event (or an array element inside array_contains)."""
    if "and" in pred:
        return all(evaluate(p, node) for p in pred["and"])
    if "or" in pred:
        return any(evaluate(p, node) for p in pred["or"])
    if "not" in pred:
        return not evaluate(pred["not"], node)
    target = node
    scope = pred.get("scope")
    if scope is not None:
        for step in [scope] if isinstance(scope, str) else scope:
            target = target.get(step, _MISSING) if isinstance(target, dict) else _MISSING
    if "key" in pred:
        target = target.get(pred["key"], _MISSING) if isinstance(target, dict) else _MISSING
    return _match_value(pred["value"], target)


def _match_value(m: dict[str, Any], value: Any) -> bool:
    if "is_present" in m:
        return (value is not _MISSING and value is not None) == m["is_present"]
    if value is _MISSING:
        return False
    if "equals" in m:
        return value == m["equals"] and type(value) is type(m["equals"]) or (
            isinstance(value, int | float) and not isinstance(value, bool)
            and isinstance(m["equals"], int | float) and value == m["equals"])
    if "at_least" in m or "at_most" in m:
        if isinstance(value, bool) or not isinstance(value, int | float):
            try:
                value = float(value)
            except (TypeError, ValueError):
                return False
        return (m.get("at_least", value) <= value) and (value <= m.get("at_most", value))
    if "version_matches" in m:
        return isinstance(value, str) and version_matches(m["version_matches"], value)
    if "array_contains" in m:
        if not isinstance(value, list):
            return False
        if "index" in m:
            i = m["index"]
            return -len(value) <= i < len(value) and evaluate(m["array_contains"], value[i])
        return any(evaluate(m["array_contains"], item) for item in value)
    return False


_RANGE = re.compile(r"^([\[\]])\s*([^,]*)\s*,\s*([^,]*)\s*([\[\]\)])$")


def _version_key(v: str) -> tuple[tuple[int, Any], ...]:
    parts = re.split(r"[.\-_+]", v)
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts if p)


def version_matches(pattern: str, version: str) -> bool:
    """Ivy version matchers: exact `1.2.3`, sub-revision `1.2.+`, ranges `[1.0,2.0)` `]1.0,)`."""
    pattern = pattern.strip()
    if pattern in ("latest.integration", "latest.release", "+"):
        return True
    if pattern.endswith("+"):
        return version.startswith(pattern[:-1])
    m = _RANGE.match(pattern)
    if m:
        lo_b, lo, hi, hi_b = m.groups()
        v = _version_key(version)
        if lo:
            k = _version_key(lo)
            if v < k or (lo_b == "]" and v == k):
                return False
        if hi:
            k = _version_key(hi)
            if v > k or (hi_b in ("[", ")") and v == k):
                return False
        return True
    return _version_key(pattern) == _version_key(version)
