"""Raw NDJSON bytes → an Arrow table of landing rows, without a Python loop per event.

The typed envelope columns are parsed by Arrow's JSON reader (C++); the original line of every
event is kept byte for byte in `raw`, split from the same buffer by Arrow at each b"\\n". Lines
that are not usable events (not UTF-8, not one JSON object, wrong types, no id, type or offset,
an offset not of RTDS's form, timestamps that date nothing or fall outside the documented range)
are split off as dead letters with their exact bytes, position and reason.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import re
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from rtds_pipeline.protocol.events import (
    EVENT_TIME_SLACK_DAYS,
    MAX_EVENT_AGE_DAYS,
    MIN_PROCESSED,
    OFFSET_PATTERN,
    OFFSET_UPDATE,
    is_offset,
)

_BLANKS = re.compile(rb"\n\n+")
_MIN_PROCESSED = datetime.datetime.fromisoformat(MIN_PROCESSED)

# What Arrow parses out of each event; everything else stays in `raw`.
PARSE_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("type", pa.string()),
    ("offset", pa.string()),
    ("occurred", pa.timestamp("us", tz="UTC")),
    ("processed", pa.timestamp("us", tz="UTC")),
    ("device", pa.struct([("device_type", pa.string()), ("channel", pa.string()),
                          ("named_user_id", pa.string())])),
    ("user", pa.struct([("contact_id", pa.string()), ("named_user_id", pa.string())])),
    ("body", pa.struct([("push_id", pa.string()), ("group_id", pa.string())])),
])

# One row per event in the landing zone. `offset` is a reserved word in DuckDB: `rtds_offset`.
LANDING_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("type", pa.string()),
    ("rtds_offset", pa.string()),
    ("occurred", pa.timestamp("ms", tz="UTC")),
    ("processed", pa.timestamp("ms", tz="UTC")),
    ("device_type", pa.string()),
    ("channel", pa.string()),
    ("named_user_id", pa.string()),
    ("contact_id", pa.string()),
    ("push_id", pa.string()),
    ("group_id", pa.string()),
    ("window_seq", pa.int64()),   # which commit landed it …
    ("window_pos", pa.int64()),   # … and where in that window's stream: the stream position
    ("raw", pa.large_string()),   # the event exactly as Airship sent it
])


@dataclasses.dataclass
class DeadLetter:
    position: int  # line number within the window
    error: str
    raw: bytes  # the line exactly as received (of an overlong line: its first bytes)
    length: int | None = None  # bytes of the whole line when `raw` holds only a prefix

    def to_json(self, window_seq: int) -> bytes:
        """One line of a dead-letter file. `raw` is the text when the bytes are UTF-8; otherwise
        `raw` shows them backslash-escaped and `raw_base64` holds them exactly."""
        doc: dict[str, Any] = {"window_seq": window_seq, "position": self.position,
                               "error": self.error, "bytes": self.length or len(self.raw)}
        try:
            doc["raw"] = self.raw.decode("utf-8")
        except UnicodeDecodeError:
            doc["raw"] = self.raw.decode("utf-8", "backslashreplace")
            doc["raw_base64"] = base64.b64encode(self.raw).decode()
        if self.length is not None:
            doc["truncated"] = True
        return orjson.dumps(doc)


@dataclasses.dataclass
class ParsedBatch:
    rows: pa.Table  # LANDING_SCHEMA, data events only
    dead: list[DeadLetter]
    last_offset: str | None  # of the last line with an offset, OFFSET_UPDATE included
    offset_updates: int
    lines: int  # lines that are not blank
    keepalives: int = 0  # blank lines: RTDS keep-alives

    def shift_positions(self, by: int) -> None:
        """Count line positions from `by`: a batch is parsed (positions from 0) before the lines
        ahead of it are counted, then placed in stream order."""
        if by:
            i = LANDING_SCHEMA.get_field_index("window_pos")
            self.rows = self.rows.set_column(i, LANDING_SCHEMA.field(i), pc.add(self.rows.column(i), by))
            for d in self.dead:
                d.position += by


def strip_blank_lines(data: bytes | pa.Buffer) -> bytes:
    data = _BLANKS.sub(b"\n", data)
    return data[1:] if data.startswith(b"\n") else data


def parse_batch(data: bytes | pa.Buffer, window_seq: int, first_pos: int = 0) -> ParsedBatch:
    """Parse complete, newline-terminated NDJSON lines; blank lines (keep-alives) are counted.

    Every line that is not a usable event goes to `dead` with its exact bytes, its position and
    the reason (`validate_rows`); its neighbours land."""
    raw = _raw_column(data)
    keepalives = pc.sum(pc.equal(pc.binary_length(raw), 0)).as_py() or 0
    if keepalives:
        data = strip_blank_lines(data)
        raw = _raw_column(data)
    if not len(data):
        return ParsedBatch(LANDING_SCHEMA.empty_table(), [], None, 0, 0, keepalives)
    lines = len(raw)
    parsed = _read_checked(data, raw)
    if parsed is not None:
        good_positions = None
        dead: list[DeadLetter] = []
    else:
        parsed, raw, good_positions, dead = _salvage(data, first_pos)
    n = parsed.num_rows
    positions = (pa.array(np.arange(first_pos, first_pos + n, dtype=np.int64))
                 if good_positions is None else pa.array(good_positions, pa.int64()))
    offsets = parsed.column("offset")
    types = parsed.column("type")
    is_update = pc.fill_null(pc.equal(types, OFFSET_UPDATE), False)
    unusable = validate_rows(parsed, is_update)
    if pc.any(unusable).as_py():
        for i in np.flatnonzero(unusable.to_numpy(zero_copy_only=False)):
            line = raw[i].as_py().encode()
            dead.append(DeadLetter(positions[i].as_py(), _reason(line), line))
        dead.sort(key=lambda d: d.position)
        is_update = pc.and_(is_update, pc.invert(unusable))
    valid_offsets = pc.if_else(unusable, pa.scalar(None, pa.string()), offsets)
    last_offset = _last_valid(valid_offsets)
    updates = pc.sum(is_update).as_py() or 0
    keep = pc.invert(pc.or_(is_update, unusable))
    device, user, body = (parsed.column(c) for c in ("device", "user", "body"))
    rows = pa.table({
        "id": parsed.column("id"),
        "type": types,
        "rtds_offset": offsets,
        "occurred": pc.cast(parsed.column("occurred"), pa.timestamp("ms", tz="UTC"), safe=False),
        "processed": pc.cast(parsed.column("processed"), pa.timestamp("ms", tz="UTC"), safe=False),
        "device_type": pc.struct_field(device, "device_type"),
        "channel": pc.struct_field(device, "channel"),
        "named_user_id": pc.coalesce(pc.struct_field(user, "named_user_id"),
                                     pc.struct_field(device, "named_user_id")),
        "contact_id": pc.struct_field(user, "contact_id"),
        "push_id": pc.struct_field(body, "push_id"),
        "group_id": pc.struct_field(body, "group_id"),
        "window_seq": pa.array(np.full(n, window_seq, dtype=np.int64)),
        "window_pos": positions,
        "raw": raw,
    }, schema=LANDING_SCHEMA)
    if updates or len(dead):
        rows = rows.filter(keep)
    return ParsedBatch(rows, dead, last_offset, updates, lines, keepalives)


def validate_rows(parsed: pa.Table, is_update: pa.ChunkedArray | pa.Array,
                  now: datetime.datetime | None = None) -> pa.ChunkedArray:
    """True for each parsed row that must not land: an offset not of RTDS's form (`is_offset`),
    or — for events, not OFFSET_UPDATEs — no id or type, no timestamp to date it by, or times
    outside the documented range (see `MAX_EVENT_AGE_DAYS` and `EVENT_TIME_SLACK_DAYS`)."""
    occ, proc = parsed.column("occurred"), parsed.column("processed")
    now = now or datetime.datetime.now(datetime.UTC)
    slack = datetime.timedelta(days=EVENT_TIME_SLACK_DAYS)
    oldest = datetime.timedelta(days=MAX_EVENT_AGE_DAYS) + slack
    ref = pc.fill_null(proc, pa.scalar(now, proc.type))
    bad_time = pc.or_kleene(
        pc.or_(pc.less(proc, pa.scalar(_MIN_PROCESSED, proc.type)),
               pc.greater(proc, pa.scalar(now + slack, proc.type))),
        pc.or_(pc.less(occ, pc.subtract(ref, pa.scalar(oldest))),
               pc.greater(occ, pc.add(ref, pa.scalar(slack)))))
    bad_event = pc.or_(
        pc.or_(pc.is_null(parsed.column("id")), pc.is_null(parsed.column("type"))),
        pc.or_(pc.and_(pc.is_null(occ), pc.is_null(proc)), pc.fill_null(bad_time, False)))
    bad_offset = pc.invert(pc.fill_null(
        pc.match_substring_regex(parsed.column("offset"), OFFSET_PATTERN), False))
    return pc.or_(bad_offset, pc.and_(pc.invert(is_update), bad_event))


def _reason(line: bytes) -> str:
    """Why `validate_rows` refused this event, in words, from its JSON (dead rows only)."""
    try:
        row = orjson.loads(line)
    except orjson.JSONDecodeError as exc:  # Arrow took what orjson does not
        return f"unusable event: {exc}"
    if not isinstance(row.get("offset"), str):
        return "event has no offset (or not a string)"
    if not is_offset(row["offset"]):
        return (f"offset {row['offset'][:40]!r} is not of RTDS's form (1 to 19 digits): it could "
                "never be resumed from")
    if row.get("type") == OFFSET_UPDATE:
        return "unusable OFFSET_UPDATE"
    missing = [k for k in ("id", "type") if row.get(k) is None]
    if missing:
        return f"event has no {' and no '.join(missing)}"
    occ, proc = row.get("occurred"), row.get("processed")
    if occ is None and proc is None:
        return "event has neither occurred nor processed: no day to land it in"
    return (f"occurred {occ} / processed {proc} outside the documented range: processed from "
            f"{MIN_PROCESSED[:10]} to tomorrow, occurred at most {MAX_EVENT_AGE_DAYS} days "
            f"(+{EVENT_TIME_SLACK_DAYS}) before processed and {EVENT_TIME_SLACK_DAYS} day after")


def _read_checked(data: bytes | pa.Buffer, raw: pa.Array) -> pa.Table | None:
    """Arrow's parse of a batch, or None when some line needs the slow path: invalid UTF-8
    (Arrow would land it, and DuckDB could then never read the file), a line that does not start
    with `{` (a `null` line crashes Arrow 26's reader with a segmentation fault), or a line that
    holds more than one value (Arrow would make two rows of it, misaligned with `raw`)."""
    try:
        raw.validate(full=True)
    except pa.ArrowInvalid:
        return None
    if not pc.all(pc.starts_with(raw, "{")).as_py():
        return None
    try:
        parsed = _read(data)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None
    return parsed if parsed.num_rows == len(raw) else None


def _read(data: bytes | pa.Buffer) -> pa.Table:
    return pj.read_json(
        pa.BufferReader(data),  # zero-copy over bytes or bytearray
        read_options=pj.ReadOptions(use_threads=False, block_size=max(1 << 20, min(len(data) + 1, 64 << 20))),
        parse_options=pj.ParseOptions(explicit_schema=PARSE_SCHEMA,
                                      unexpected_field_behavior="ignore"))


def _raw_column(data: bytes | pa.Buffer) -> pa.Array:
    """Each line of `data` (newline-terminated) as a string, without its b"\\n": split by Arrow,
    which releases the GIL, and copied into Arrow's memory pool, which hands freed pages back to
    the OS (a Python `bytes` copy would sit in glibc's heap, which keeps them)."""
    whole = pa.Array.from_buffers(pa.large_binary(), 1, [
        None, pa.py_buffer(np.array([0, len(data)], dtype=np.int64)), pa.py_buffer(data)])
    lines = pc.split_pattern(whole, b"\n").flatten()
    return lines.slice(0, len(lines) - 1).view(pa.large_string())  # after the last b"\n": nothing


def _salvage(data: bytes | pa.Buffer, first_pos: int) -> tuple[pa.Table, pa.Array, list[int], list[DeadLetter]]:
    """The slow path for a batch Arrow refused or must not see: find the bad lines one by one.
    A line reaches Arrow only once it is valid UTF-8 and exactly one JSON object."""
    data = bytes(data)
    good: list[bytes] = []
    positions: list[int] = []
    dead: list[DeadLetter] = []
    for i, line in enumerate(data.split(b"\n")[:-1]):
        pos = first_pos + i
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as exc:
            dead.append(DeadLetter(pos, f"not valid UTF-8: {exc.reason} at byte {exc.start}", line))
            continue
        try:
            doc = orjson.loads(line)
            if not isinstance(doc, dict):
                raise ValueError(f"not a JSON object but {type(doc).__name__}")
            _read(line + b"\n")
        except (orjson.JSONDecodeError, ValueError, pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            dead.append(DeadLetter(pos, f"{type(exc).__name__}: {exc}"[:500], line))
            continue
        good.append(line)
        positions.append(pos)
    joined = b"".join(x + b"\n" for x in good)
    parsed = _read(joined) if good else PARSE_SCHEMA.empty_table()
    return parsed, _raw_column(joined), positions, dead


def _last_valid(arr: pa.ChunkedArray) -> str | None:
    for chunk in reversed(arr.chunks):
        valid = chunk.drop_null()
        if len(valid):
            return valid[-1].as_py()
    return None
