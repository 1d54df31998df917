"""Raw NDJSON bytes → an Arrow table of landing rows, without a Python loop per event.

The typed envelope columns are parsed by Arrow's JSON reader (C++); the original line of every
event is kept byte for byte in `raw`, split from the same buffer by Arrow at each b"\\n". Lines
the reader cannot take (malformed JSON, wrong types, no id or offset) are split off as dead
letters.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from rtds_pipeline.rtds.events import OFFSET_UPDATE

_BLANKS = re.compile(rb"\n\n+")

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
    raw: bytes


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
    """Parse complete, newline-terminated NDJSON lines; blank lines (keep-alives) are counted."""
    raw = _raw_column(data)
    keepalives = pc.sum(pc.equal(pc.binary_length(raw), 0)).as_py() or 0
    if keepalives:
        data = strip_blank_lines(data)
        raw = _raw_column(data)
    if not len(data):
        return ParsedBatch(LANDING_SCHEMA.empty_table(), [], None, 0, 0, keepalives)
    lines = len(raw)
    try:
        parsed = _read(data)
        good_positions = None
        dead: list[DeadLetter] = []
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        parsed, raw, good_positions, dead = _salvage(data, first_pos)
    n = parsed.num_rows
    positions = (pa.array(np.arange(first_pos, first_pos + n, dtype=np.int64))
                 if good_positions is None else pa.array(good_positions, pa.int64()))
    offsets = parsed.column("offset")
    last_offset = _last_valid(offsets)
    types = parsed.column("type")
    is_update = pc.fill_null(pc.equal(types, OFFSET_UPDATE), False)
    updates = pc.sum(is_update).as_py() or 0
    unusable = pc.or_(pc.is_null(parsed.column("id")), pc.is_null(offsets))
    unusable = pc.and_(unusable, pc.invert(is_update))
    if pc.any(unusable).as_py():
        for i in np.flatnonzero(unusable.to_numpy(zero_copy_only=False)):
            dead.append(DeadLetter(positions[i].as_py(), "event has no id or no offset",
                                   raw[i].as_py().encode()))
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


def _salvage(data: bytes, first_pos: int) -> tuple[pa.Table, pa.Array, list[int], list[DeadLetter]]:
    """The slow path for a batch Arrow refused: find the bad lines one by one."""
    data = bytes(data)
    good: list[bytes] = []
    positions: list[int] = []
    dead: list[DeadLetter] = []
    for i, line in enumerate(data.split(b"\n")[:-1]):
        pos = first_pos + i
        try:
            doc = orjson.loads(line)
            if not isinstance(doc, dict):
                raise ValueError("not a JSON object")
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
