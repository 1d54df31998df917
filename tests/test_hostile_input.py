"""Hostile input at the edge: every bad line is a dead letter with its exact bytes, position and
reason, its neighbours land, only valid offsets become resume offsets, lines are bounded, and
responses that are not an RTDS stream fail loudly — over real HTTP from a hostile server."""

from __future__ import annotations

import base64
import dataclasses
import os
import subprocess
import sys
import textwrap

import duckdb
import orjson
import pyarrow.parquet as pq
import pytest

from rtds_pipeline.extract.errors import InvalidResponse, RedirectLoop, TlsFailure
from rtds_pipeline.extract.ingest import ingest_window
from rtds_pipeline.extract.reader import WindowLimits
from rtds_pipeline.lake.batch import parse_batch
from rtds_pipeline.lake.commits import CommitLog
from rtds_pipeline.lake.storage import open_lake
from rtds_pipeline.protocol.events import is_offset
from rtds_pipeline.protocol.timestamps import iso_ms, now_ms
from rtds_pipeline.settings import SourceConfig
from rtds_pipeline.testserver.hostile import Behaviour, HostileServer, self_signed_tls

FAST = WindowLimits(max_seconds=20, idle_timeout=10, batch_bytes=1 << 20)
NOW = iso_ms(now_ms() - 60_000)


def good(i: int, **kw) -> dict:
    return {"id": f"e{i}", "type": "OPEN", "offset": f"{1_000_000_000_000 + i}",
            "occurred": NOW, "processed": NOW, **kw}


def line(i: int, **kw) -> bytes:
    return orjson.dumps(good(i, **kw))


# Each bad line, and a fragment of the reason its dead letter must give.
BAD_LINES = {
    "non-UTF-8 bytes": (line(2).replace(b'"e2"', b'"e\xff\xfe2"'), "not valid UTF-8"),
    "no type": (orjson.dumps({k: v for k, v in good(2).items() if k != "type"}), "no type"),
    "no id": (orjson.dumps({k: v for k, v in good(2).items() if k != "id"}), "no id"),
    "no offset": (orjson.dumps({k: v for k, v in good(2).items() if k != "offset"}), "no offset"),
    "type null": (line(2, type=None), "no type"),
    "an array": (b"[1, 2, 3]", "not a JSON object"),
    "null": (b"null", "not a JSON object"),
    "a string": (b'"OPEN"', "not a JSON object"),
    "two objects on a line": (line(2) + line(3), "unexpected content"),
    "offset abc": (line(2, offset="abc"), "not of RTDS's form"),
    "offset -5": (line(2, offset="-5"), "not of RTDS's form"),
    "offset of 20 digits": (line(2, offset="1" * 20), "not of RTDS's form"),
    "offset a number": (line(2, offset=1_000_000_000_002), "changed from string to number"),
    "occurred garbage": (line(2, occurred="yesterday"), "couldn't parse"),
    "occurred year 0": (line(2, occurred="0000-01-01T00:00:00Z"), "outside the documented range"),
    "occurred 1969": (line(2, occurred="1969-12-31T23:59:59Z"), "outside the documented range"),
    "processed 1969": (line(2, occurred="1969-12-31T23:59:59Z", processed="1969-12-31T23:59:59Z"),
                       "outside the documented range"),
    "occurred 92 days before processed": (
        line(2, occurred=iso_ms(now_ms() - 92 * 86_400_000)), "outside the documented range"),
    "processed next year": (line(2, processed=iso_ms(now_ms() + 400 * 86_400_000)),
                            "outside the documented range"),
    "no timestamps": (orjson.dumps({k: v for k, v in good(2).items()
                                    if k not in ("occurred", "processed")}), "neither occurred"),
}


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_a_bad_line_is_a_dead_letter_with_its_exact_bytes_and_its_neighbours_land(case):
    bad, reason = BAD_LINES[case]
    batch = parse_batch(line(1) + b"\n" + bad + b"\n" + line(3) + b"\n", window_seq=1)
    assert batch.rows.column("id").to_pylist() == ["e1", "e3"]
    assert [(d.position, d.raw) for d in batch.dead] == [(1, bad)]
    assert reason in batch.dead[0].error
    assert batch.last_offset == good(3)["offset"]


def test_an_event_89_days_old_is_kept():
    batch = parse_batch(line(1, occurred=iso_ms(now_ms() - 89 * 86_400_000)) + b"\n", window_seq=1)
    assert batch.rows.num_rows == 1 and not batch.dead


def test_a_null_line_does_not_crash_the_reader():
    """Arrow 26's JSON reader dies with SIGSEGV on a `null` line: run it where a crash shows."""
    code = textwrap.dedent("""
        from rtds_pipeline.lake.batch import parse_batch
        b = parse_batch(b'null\\n {"id":"a"} \\n null\\n', window_seq=1)
        print(len(b.dead), b.rows.num_rows)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["3", "0"]


@pytest.mark.parametrize("bad", ["abc", "-5", "1" * 20, " 12", "12 ", "1.5", "", "１２"])
def test_offsets_of_another_form_are_refused(bad):
    assert not is_offset(bad)
    assert is_offset("1000000000123") and is_offset("0") and is_offset("9" * 19)


def _hostile_source(url: str) -> SourceConfig:
    return SourceConfig(name="events", base_url=url)


def test_a_window_of_hostile_lines_lands_the_good_ones_and_duckdb_reads_every_file(tmp_path):
    """Today's failures: a non-UTF-8 line landed as an event and DuckDB could not read its file;
    a line without `type` landed and the events build failed on NOT NULL; a bad offset at the
    end of a window became the resume offset. Each bad line sits between good ones."""
    body, bad = [], []
    i = 0
    for _name, (raw, _reason) in sorted(BAD_LINES.items()):
        i += 1
        body.append(line(i))
        bad.append(raw)
        body.append(raw)
    i += 1
    body.append(line(i))
    body.append(line(i + 1, offset="not-an-offset"))  # the last line: must not be the position
    with HostileServer(Behaviour.lines(b"\n".join(body) + b"\n")) as srv:
        lake = open_lake(str(tmp_path / "lake"))
        out = ingest_window(_hostile_source(srv.url), lake, FAST)
    assert out.stats.stop_reason.startswith("caught up")
    commit = CommitLog(lake, "events").latest()
    assert commit.resume_offset == good(i)["offset"]
    assert commit.events == i and commit.dead_letters == len(bad) + 1
    files = [lake.path(f.path) for f in commit.files]
    n, types = duckdb.sql(f"SELECT count(*), count(type) FROM read_parquet({files!r})").fetchall()[0]
    assert n == types == i
    ids = {r for f in files for r in pq.read_table(f, columns=["id"]).column("id").to_pylist()}
    assert ids == {f"e{k}" for k in range(1, i + 1)}
    dead = [orjson.loads(x) for f in commit.dead_letter_files
            for x in lake.fs.cat_file(lake.path(f.path)).splitlines()]
    exact = [base64.b64decode(d["raw_base64"]) if "raw_base64" in d else d["raw"].encode()
             for d in dead]
    assert exact == [*bad, body[-1]]
    assert [d["position"] for d in dead] == [2 * k + 1 for k in range(len(bad))] + [len(body) - 1]
    assert all(d["error"] for d in dead)


def test_an_overlong_line_is_a_dead_letter_of_prefix_and_length(tmp_path):
    long = b'{"id":"huge","type":"OPEN","pad":"' + b"y" * (3 << 20) + b'"}'
    body = line(1) + b"\n" + long + b"\n" + line(2) + b"\n"
    limits = dataclasses.replace(FAST, max_line_bytes=1 << 20, batch_bytes=256 << 10)
    with HostileServer(Behaviour.lines(body)) as srv:
        lake = open_lake(str(tmp_path / "lake"))
        ingest_window(_hostile_source(srv.url), lake, limits)
    commit = CommitLog(lake, "events").latest()
    assert commit.events == 2 and commit.resume_offset == good(2)["offset"]
    (dead,) = [orjson.loads(x) for f in commit.dead_letter_files
               for x in lake.fs.cat_file(lake.path(f.path)).splitlines()]
    assert dead["position"] == 1 and dead["bytes"] == len(long) and dead["truncated"]
    assert long.startswith(dead["raw"].encode()) and 0 < len(dead["raw"]) <= 4096
    assert "maximum line size" in dead["error"]


def test_a_line_that_never_ends_keeps_memory_bounded(tmp_path):
    """400 MB without a newline: today's reader buffers it all (RSS grows with it). Bounded: the
    process's peak stays within a batch and one maximum line of its start."""
    body = line(1) + b"\n" + line(2) + b"\n"
    with HostileServer(Behaviour.lines(body, endless_bytes=400 << 20, keepalive=False)) as srv:
        code = textwrap.dedent(f"""
            import psutil
            from rtds_pipeline.extract.ingest import ingest_window
            from rtds_pipeline.lake.storage import open_lake
            from rtds_pipeline.settings import SourceConfig
            from rtds_pipeline.extract.reader import WindowLimits
            lake = open_lake({str(tmp_path / "lake")!r})
            ingest_window(SourceConfig("warmup", base_url={srv.url!r}), lake,
                          WindowLimits(max_seconds=30, max_bytes=1 << 20, batch_bytes=1 << 20))
            before = psutil.Process().memory_info().rss
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # the peak (VmHWM) restarts here: this window's own peak
            out = ingest_window(SourceConfig("events", base_url={srv.url!r}), lake,
                                WindowLimits(max_seconds=120, max_bytes=300 << 20,
                                             batch_bytes=1 << 20, max_line_bytes=4 << 20))
            status = open("/proc/self/status").read()
            peak = int(status.split("VmHWM:")[1].split()[0]) * 1024
            print(out.stats.stop_reason, out.stats.events, out.stats.dead_letters,
                  out.stats.bytes, peak - before, sep="|")
        """)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=280)
    assert out.returncode == 0, out.stderr
    reason, events, dead, read, growth = out.stdout.strip().splitlines()[-1].split("|")
    assert (reason, int(events), int(dead)) == ("max bytes", 2, 1)
    assert int(read) >= 300 << 20
    assert int(growth) < 64 << 20, f"peak RSS grew by {int(growth) / 1e6:.0f} MB: {out.stdout}"
    commit = CommitLog(open_lake(str(tmp_path / "lake")), "events").latest()
    assert commit.dead_letters == 1 and commit.resume_offset == good(2)["offset"]


@pytest.mark.parametrize(("behaviour", "status", "cause"), [
    (Behaviour.html(), 200, "text/html"),
    (Behaviour.html(content_type=Behaviour.content_type), 200, "<!DOCTYPE html>"),
    (Behaviour.lines(line(1) + b"\n", content_type="text/plain"), 200, "text/plain"),
    (Behaviour.bad_gzip(), 200, "not valid gzip"),
], ids=["html", "html-claiming-ndjson", "wrong-content-type", "invalid-gzip"])
def test_a_response_that_is_not_an_rtds_stream_fails_loudly(tmp_path, behaviour, status, cause):
    with HostileServer(behaviour) as srv:
        lake = open_lake(str(tmp_path / "lake"))
        with pytest.raises(InvalidResponse) as info:
            ingest_window(_hostile_source(srv.url), lake, FAST)
        assert srv.requests == 1  # not retried
    msg = str(info.value)
    assert f"{srv.url}/api/events" in msg and f"HTTP {status}" in msg and cause in msg
    assert "base_url" in msg
    assert CommitLog(lake, "events").latest() is None


def test_tls_verification_failure_fails_loudly(tmp_path):
    with HostileServer(Behaviour.lines(line(1) + b"\n"), tls=self_signed_tls(tmp_path)) as srv:
        lake = open_lake(str(tmp_path / "lake"))
        with pytest.raises(TlsFailure) as info:
            ingest_window(_hostile_source(srv.url), lake, FAST)
    msg = str(info.value)
    assert srv.url in msg and "TLS verification failed" in msg and "certificate" in msg.lower()


def test_an_endless_redirect_loop_fails_loudly(tmp_path):
    with HostileServer(Behaviour.redirect_loop()) as srv:
        lake = open_lake(str(tmp_path / "lake"))
        with pytest.raises(RedirectLoop) as info:
            ingest_window(_hostile_source(srv.url), lake, FAST)
        assert srv.requests == 11
    assert srv.url in str(info.value) and "307" in str(info.value)


@pytest.mark.parametrize("behaviour", ["html", "bad_gzip", "redirect_loop", "tls"])
def test_the_command_line_exits_non_zero_with_a_message_not_a_traceback(tmp_path, behaviour):
    tls = self_signed_tls(tmp_path) if behaviour == "tls" else None
    b = Behaviour.lines(line(1) + b"\n") if behaviour == "tls" else getattr(Behaviour, behaviour)()
    with HostileServer(b, tls=tls) as srv:
        env = {**os.environ, "RTDS_BASE_URL": srv.url, "RTDS_LAKE_URL": str(tmp_path / "lake"),
               "RTDS_WINDOW_SECONDS": "10"}
        out = subprocess.run([sys.executable, "-m", "rtds_pipeline.cli", "ingest", "--follow"],
                             env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr and out.stderr.startswith("error: ")
    assert srv.url in out.stderr  # and --follow did not loop on it (the timeout)
