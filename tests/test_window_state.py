"""The window reader's state on synthetic chunks: hand-overs, dead letters of overlong lines,
placing batches, and when a window settles or stops. No server: the end-to-end behaviour is in
test_ingest.py, test_faults.py and test_hostile_input.py."""

from __future__ import annotations

import uuid

import orjson
import pyarrow as pa
from landing import event

from rtds_pipeline.extract.reader import WindowLimits, WindowState
from rtds_pipeline.lake.batch import ParsedBatch, parse_batch
from rtds_pipeline.protocol.timestamps import parse_iso_ms

PROCESSED = "2026-12-01T10:00:00.000Z"


def line(i: int, processed: str = PROCESSED) -> bytes:
    ev = event(str(uuid.UUID(int=i)), "OPEN", PROCESSED, i, processed=processed,
               device={"channel": str(uuid.UUID(int=10**6 + i)), "device_type": "IOS"})
    return orjson.dumps(ev) + b"\n"


def offset(i: int) -> str:
    return f"{1_000_000_000_000 + i}"


def state(resume_offset: str | None = None, *, deadline: float = 100.0,
          window_start_ms: int = 2**62, **limits: object) -> WindowState:
    return WindowState(WindowLimits(**limits), resume_offset,  # type: ignore[arg-type]
                       deadline=deadline, window_start_ms=window_start_ms)


def as_bytes(items: list) -> bytes:
    return b"".join(bytes(i) for i in items)


def place_all(window: WindowState, items: list) -> list[ParsedBatch]:
    """What the pipeline does with hand-overs: parse the lines, place in order."""
    placed = []
    for item in items:
        batch = item if isinstance(item, ParsedBatch) else parse_batch(item, window_seq=1)
        window.place(batch)
        placed.append(batch)
    return placed


def test_lines_are_handed_over_once_a_batch_is_full_and_the_cut_line_stays():
    data = b"".join(line(i) for i in range(20))
    window = state(batch_bytes=1000)
    handed, chunks = [], [data[i:i + 150] for i in range(0, len(data), 150)]
    for n, chunk in enumerate(chunks):
        out = window.receive(chunk)
        if out:
            assert sum(len(c) for c in chunks[:n + 1]) - sum(len(x) for x in handed) >= 1000
        handed.extend(out)
    assert len(handed) >= 2
    assert all(bytes(h).endswith(b"\n") for h in handed)  # complete lines only
    rest = window.drain()
    assert as_bytes(handed + rest) == data  # nothing lost, nothing doubled, in order
    assert window.stats.bytes == len(data)
    assert window.caught_up() is None


def test_a_keepalive_ending_a_chunk_means_caught_up():
    window = state()
    window.receive(line(1) + line(2))
    assert window.caught_up() is None
    window.receive(b"\n")  # a blank line after a complete line: the server is idle
    assert window.caught_up() == "caught up (keep-alive)"
    assert window.healthy


def test_a_keepalive_straddling_two_chunks_is_seen():
    window = state()
    window.receive(line(1)[:-1])
    window.receive(b"\n")  # the line's own end: not a keep-alive
    assert window.caught_up() is None
    window.receive(b"\n")  # after a line's end: the blank line of a keep-alive
    assert window.caught_up() == "caught up (keep-alive)"


def test_a_following_window_reads_on_through_keepalives():
    window = state(stop_when_caught_up=False)
    window.receive(line(1) + b"\n")
    assert window.caught_up() is None


def test_an_overlong_line_is_dropped_as_it_arrives_and_dead_lettered_with_its_length():
    window = state(max_line_bytes=1000, batch_bytes=1 << 20)
    long = b'{"id":"' + b"x" * 5000 + b'"}\n'
    out = window.receive(line(1) + long[:1500])  # the complete line ahead, then the long one
    assert as_bytes(out) == line(1)
    assert window.lines.skipping and window.lines.size == 0  # nothing of it is buffered
    assert window.receive(long[1500:4000]) == []
    out = window.receive(long[4000:] + line(2))
    assert [type(x) for x in out] == [ParsedBatch]
    (dead,) = out[0].dead
    assert dead.length == len(long) - 1
    # Its prefix: what was buffered when it passed the maximum (at most DEAD_PREFIX_BYTES).
    assert dead.raw == long[:1500] and "exceeds the maximum line size of 1,000" in dead.error
    assert as_bytes(window.drain()) == line(2)  # reading goes on after it


def test_an_overlong_line_still_running_at_the_stop_is_dead_lettered_as_unterminated():
    window = state(max_line_bytes=1000)
    window.receive(b'{"id":"' + b"y" * 3000)
    (last,) = window.drain()
    assert isinstance(last, ParsedBatch)
    assert "not terminated when the window stopped" in last.dead[0].error


def test_placing_drops_the_replayed_resume_event_and_moves_the_position():
    window = state(resume_offset=offset(4))
    first, second = place_all(window, [pa.py_buffer(b"".join(line(i) for i in range(4, 7))),
                                       pa.py_buffer(b"\n".join([b"garbage", line(7)]))])
    stats = window.stats
    assert stats.replayed_dropped == 1 and stats.events == 3 and stats.dead_letters == 1
    assert stats.first_offset == offset(5)
    assert window.position == stats.last_offset == offset(7)
    # Line positions run on across batches, in stream order.
    assert first.rows.column("window_pos").to_pylist() == [1, 2]
    assert second.rows.column("window_pos").to_pylist() == [4]
    assert second.dead[0].position == 3
    # A reconnect resumes from the position: its replayed event is dropped again, once.
    window.connect()
    place_all(window, [pa.py_buffer(line(7) + line(8))])
    assert stats.replayed_dropped == 2 and stats.events == 4 and window.position == offset(8)


def test_near_max_events_the_window_settles_then_stops_exactly():
    window = state(max_events=10, batch_bytes=1 << 20)
    assert window.receive(b"".join(line(i) for i in range(8))) == []
    assert not window.must_settle()  # 8 buffered lines cannot reach 10
    window.receive(b"".join(line(i) for i in range(8, 12)))
    assert window.must_settle()
    place_all(window, window.take())
    assert not window.must_settle()
    assert window.stats.events == 12
    assert window.limit_reached(now=0.0) == "max events"


def test_bytes_and_time_bound_the_window():
    window = state(max_bytes=500, deadline=10.0)
    window.receive(line(1))
    assert window.limit_reached(now=9.9) is None
    assert window.limit_reached(now=10.0) == "max seconds"
    window.receive(line(2) + line(3))
    assert window.limit_reached(now=0.0) == "max bytes"


def test_processed_reaching_the_window_start_stops_when_a_batch_is_handed_over():
    later = "2026-12-01T11:00:00.000Z"
    window = state(window_start_ms=parse_iso_ms(later), batch_bytes=400)
    place_all(window, window.receive(line(1) + line(2)))
    assert window.caught_up() is None  # processed before the window started
    place_all(window, window.receive(line(3, processed=later) + line(4)))
    assert window.stats.max_processed_ms == parse_iso_ms(later)
    assert window.caught_up() == "caught up (processed reached window start)"
    # Checked only when a chunk completes a batch, not on every chunk.
    assert window.receive(line(5)[:50]) == []
    assert window.caught_up() is None
    assert window.receive(line(5)[50:] + line(6))
    assert window.caught_up() == "caught up (processed reached window start)"
