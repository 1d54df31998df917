"""The RTDS request body: model, validation and serialisation.

The test server validates incoming bodies with `parse_request`; the stream client builds its
bodies with `StreamRequest` and the same validation, so a request the client sends is one the
spec accepts.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson

from rtds_pipeline.protocol.events import COMPLIANCE_DEVICE_TYPES, DEVICE_TYPES, EVENT_TYPE_SET

FILTER_KEYS = frozenset(
    {"types", "device_types", "notifications", "devices", "users", "latency", "predicates"}
)
STARTS = ("EARLIEST", "LATEST")  # where a stream without resume_offset begins
COMPLIANCE_FILTER_KEYS = frozenset({"device_types", "latency"})
DEVICE_KEYS = frozenset({"channel", "named_user_id"})
LEGACY_DEVICE_KEYS = frozenset({"ios_channel", "android_channel", "amazon_channel"})
USER_KEYS = frozenset({"contact_id", "named_user_id"})
MATCHER_KEYS = frozenset(
    {"equals", "at_least", "at_most", "is_present", "version_matches", "array_contains", "index"}
)


class RequestError(ValueError):
    """The request body breaks the RTDS request schema; the message names the field."""


@dataclasses.dataclass(frozen=True)
class StreamRequest:
    """One RTDS request body. Exactly one of `start` / `resume_offset` (or neither)."""

    start: str | None = None
    resume_offset: str | None = None
    filters: tuple[dict[str, Any], ...] = ()
    subset: dict[str, Any] | None = None
    enable_offset_updates: bool = False

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> StreamRequest:
        """Build from a body already checked by `validate_body`."""
        filters = body.get("filters") or ()
        if isinstance(filters, dict):
            filters = [filters]
        return cls(
            start=body.get("start"),
            resume_offset=body.get("resume_offset"),
            filters=tuple(filters),
            subset=body.get("subset"),
            enable_offset_updates=bool(body.get("enable_offset_updates")),
        )

    def validate(self, *, compliance: bool) -> StreamRequest:
        """Raise RequestError unless the spec accepts this body on the given endpoint."""
        validate_body(self.to_dict(), compliance=compliance, strict=False)
        return self

    def resumed_at(self, offset: str) -> StreamRequest:
        """The same request, resuming after `offset` (drops `start`, as the spec demands)."""
        return dataclasses.replace(self, start=None, resume_offset=offset)

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if self.start is not None:
            body["start"] = self.start
        if self.resume_offset is not None:
            body["resume_offset"] = self.resume_offset
        if self.filters:
            body["filters"] = list(self.filters)
        if self.subset is not None:
            body["subset"] = self.subset
        if self.enable_offset_updates:
            body["enable_offset_updates"] = True
        return body

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())


def parse_request(raw: bytes, *, compliance: bool, strict: bool = False) -> StreamRequest:
    """Decode and validate a request body; raise RequestError saying what is wrong."""
    if not raw.strip():
        body: Any = {}
    else:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise RequestError(f"request body is not valid JSON: {exc}") from None
    validate_body(body, compliance=compliance, strict=strict)
    return StreamRequest.from_dict(body)


def validate_body(body: Any, *, compliance: bool, strict: bool = False) -> None:
    """Check a decoded body against the spec's eventsRequest / complianceRequest."""
    if not isinstance(body, dict):
        raise RequestError("request body must be a JSON object")
    allowed = {"start", "resume_offset", "filters", "subset", "enable_offset_updates"}
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise RequestError(f"unexpected attribute(s) in request: {', '.join(unknown)}")
    start, resume = body.get("start"), body.get("resume_offset")
    if start is not None and resume is not None:
        raise RequestError("specify only one of 'start' and 'resume_offset'")
    if start is not None and start not in STARTS:
        raise RequestError(f"'start' must be EARLIEST or LATEST, got {start!r}")
    if resume is not None:
        if not isinstance(resume, str):
            raise RequestError("'resume_offset' must be a string (offsets are opaque strings)")
        if not resume:
            raise RequestError("'resume_offset' must not be empty")
    eou = body.get("enable_offset_updates")
    if eou is not None and not isinstance(eou, bool):
        raise RequestError("'enable_offset_updates' must be true or false")
    if "filters" in body:
        _validate_filters(body["filters"], compliance=compliance, strict=strict)
    if "subset" in body:
        _validate_subset(body["subset"])


def _validate_filters(filters: Any, *, compliance: bool, strict: bool) -> None:
    if isinstance(filters, dict) and not strict:
        # Airship's own docs show `filters: {...}`; be lenient unless asked not to be.
        filters = [filters]
    if not isinstance(filters, list):
        raise RequestError("'filters' must be an array of filter objects")
    if not filters:
        raise RequestError("'filters' must not be an empty array; omit it to receive everything")
    for i, flt in enumerate(filters):
        where = f"filters[{i}]"
        if not isinstance(flt, dict):
            raise RequestError(f"{where} must be an object")
        if not flt:
            raise RequestError(f"{where} is an empty object; give at least one filter key")
        keys = COMPLIANCE_FILTER_KEYS if compliance else FILTER_KEYS
        unknown = sorted(set(flt) - keys)
        if unknown:
            raise RequestError(
                f"{where} has unexpected attribute(s) {', '.join(unknown)}; "
                f"allowed: {', '.join(sorted(keys))}"
            )
        for key, value in flt.items():
            _FILTER_CHECKS[key](value, f"{where}.{key}", compliance, strict)


def _nonempty_list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise RequestError(f"{where} must be an array")
    if not value:
        raise RequestError(f"{where} must not be an empty array")
    return value


def _check_types(value: Any, where: str, compliance: bool, strict: bool) -> None:
    for t in _nonempty_list(value, where):
        if not isinstance(t, str) or t.upper() not in EVENT_TYPE_SET:
            raise RequestError(f"{where}: unknown event type {t!r}")


def _check_device_types(value: Any, where: str, compliance: bool, strict: bool) -> None:
    allowed = COMPLIANCE_DEVICE_TYPES if compliance else DEVICE_TYPES
    for t in _nonempty_list(value, where):
        if t not in allowed:
            raise RequestError(f"{where}: {t!r} is not one of {', '.join(allowed)} (lower case)")


def _check_notifications(value: Any, where: str, compliance: bool, strict: bool) -> None:
    # The spec's schema says one object; its own example and the Java client send an array.
    items = value if isinstance(value, list) and not strict else [value]
    if isinstance(value, list) and not value:
        raise RequestError(f"{where} must not be an empty array")
    for item in items:
        if not isinstance(item, dict) or len(item) != 1 or not (
            set(item) <= {"push_id", "group_id"}
        ):
            raise RequestError(f"{where} must be {{\"push_id\": …}} or {{\"group_id\": …}}")
        if not isinstance(next(iter(item.values())), str):
            raise RequestError(f"{where}: push_id / group_id must be a string")


def _check_devices(value: Any, where: str, compliance: bool, strict: bool) -> None:
    keys = DEVICE_KEYS if strict else DEVICE_KEYS | LEGACY_DEVICE_KEYS
    _check_selectors(value, where, keys)


def _check_users(value: Any, where: str, compliance: bool, strict: bool) -> None:
    _check_selectors(value, where, USER_KEYS)


def _check_selectors(value: Any, where: str, keys: frozenset[str]) -> None:
    for item in _nonempty_list(value, where):
        if not isinstance(item, dict) or len(item) != 1 or not set(item) <= keys:
            raise RequestError(f"{where}: each entry must have exactly one of {', '.join(sorted(keys))}")
        if not isinstance(next(iter(item.values())), str):
            raise RequestError(f"{where}: values must be strings")


def _check_latency(value: Any, where: str, compliance: bool, strict: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RequestError(f"{where} must be a non-negative integer of milliseconds")


def _check_predicates(value: Any, where: str, compliance: bool, strict: bool) -> None:
    items = [value] if isinstance(value, dict) and not strict else value
    for i, pred in enumerate(_nonempty_list(items, where)):
        validate_predicate(pred, f"{where}[{i}]")


_FILTER_CHECKS = {
    "types": _check_types,
    "device_types": _check_device_types,
    "notifications": _check_notifications,
    "devices": _check_devices,
    "users": _check_users,
    "latency": _check_latency,
    "predicates": _check_predicates,
}


def validate_predicate(pred: Any, where: str, *, in_array: bool = False) -> None:
    """A JSON Predicate: and / or / not, or a value test {scope?, key, value}."""
    if not isinstance(pred, dict) or not pred:
        raise RequestError(f"{where} must be a JSON predicate object")
    if "and" in pred or "or" in pred:
        op = "and" if "and" in pred else "or"
        if len(pred) != 1:
            raise RequestError(f"{where}: '{op}' must stand alone in its object")
        for i, sub in enumerate(_nonempty_list(pred[op], f"{where}.{op}")):
            validate_predicate(sub, f"{where}.{op}[{i}]", in_array=in_array)
        return
    if "not" in pred:
        if len(pred) != 1:
            raise RequestError(f"{where}: 'not' must stand alone in its object")
        validate_predicate(pred["not"], f"{where}.not", in_array=in_array)
        return
    unknown = sorted(set(pred) - {"scope", "key", "value"})
    if unknown:
        raise RequestError(f"{where}: unexpected attribute(s) {', '.join(unknown)}")
    if "value" not in pred:
        raise RequestError(f"{where}: a value test needs 'value' (a matcher)")
    if "key" not in pred and not in_array:
        raise RequestError(f"{where}: a value test needs 'key'")
    if "key" in pred and not isinstance(pred["key"], str):
        raise RequestError(f"{where}.key must be a string")
    scope = pred.get("scope")
    if scope is not None and not (
        isinstance(scope, str) or (isinstance(scope, list) and all(isinstance(s, str) for s in scope))
    ):
        raise RequestError(f"{where}.scope must be a key or an array of keys")
    _validate_matcher(pred["value"], f"{where}.value")


def _validate_matcher(m: Any, where: str) -> None:
    if not isinstance(m, dict) or not m:
        raise RequestError(f"{where} must be a matcher object")
    unknown = sorted(set(m) - MATCHER_KEYS)
    if unknown:
        raise RequestError(f"{where}: unknown matcher(s) {', '.join(unknown)}")
    kinds = set(m) - {"index"}
    if "index" in m and kinds != {"array_contains"}:
        raise RequestError(f"{where}: 'index' goes only with 'array_contains'")
    if kinds - {"at_least", "at_most"} and len(kinds) > 1:
        raise RequestError(f"{where}: use one matcher per value test (got {', '.join(sorted(kinds))})")
    for k in ("at_least", "at_most"):
        if k in m and (isinstance(m[k], bool) or not isinstance(m[k], int | float)):
            raise RequestError(f"{where}.{k} must be a number")
    if "is_present" in m and not isinstance(m["is_present"], bool):
        raise RequestError(f"{where}.is_present must be true or false")
    if "version_matches" in m and not isinstance(m["version_matches"], str):
        raise RequestError(f"{where}.version_matches must be an Ivy version-matcher string")
    if "equals" in m and m["equals"] is None:
        raise RequestError(f"{where}.equals must be a boolean, number, object, string or array")
    if "index" in m and (isinstance(m["index"], bool) or not isinstance(m["index"], int)):
        raise RequestError(f"{where}.index must be an integer")
    if "array_contains" in m:
        validate_predicate(m["array_contains"], f"{where}.array_contains", in_array=True)


def _validate_subset(subset: Any) -> None:
    if not isinstance(subset, dict):
        raise RequestError("'subset' must be an object")
    kind = subset.get("type")
    if kind == "SAMPLE":
        unknown = sorted(set(subset) - {"type", "proportion"})
        p = subset.get("proportion")
        if unknown:
            raise RequestError(f"subset SAMPLE takes only 'proportion' (got {', '.join(unknown)})")
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0 <= p <= 1:
            raise RequestError("subset SAMPLE needs 'proportion', a number from 0 to 1")
    elif kind == "PARTITION":
        unknown = sorted(set(subset) - {"type", "count", "selection"})
        count, sel = subset.get("count"), subset.get("selection")
        if unknown:
            raise RequestError(
                f"subset PARTITION takes only 'count' and 'selection' (got {', '.join(unknown)})"
            )
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise RequestError("subset PARTITION needs 'count', an integer > 0")
        if isinstance(sel, bool) or not isinstance(sel, int) or not 0 <= sel < count:
            raise RequestError(f"subset PARTITION needs 'selection', an integer in 0..{count - 1}")
    else:
        raise RequestError(f"subset 'type' must be SAMPLE or PARTITION, got {kind!r}")
