"""The lake's lifecycle with real processes and stores: exclusive commits (two processes racing,
a 300-round harness, locally and on the S3 server), O(new) log reads, the committed view,
orphan clean-up, compaction with retention, and the stream's head behind the committed offset."""

from __future__ import annotations

import dataclasses
import datetime as dt
import multiprocessing
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import duckdb
import orjson
import pyarrow.parquet as pq
import pytest
from commit_race import race
from landing import commit_window, event

from rtds_pipeline.extract.ingest import StreamHeadBehind, ingest_window
from rtds_pipeline.extract.reader import WindowLimits
from rtds_pipeline.lake.batch import parse_batch
from rtds_pipeline.lake.commits import (
    COMPACTION,
    RESET,
    Commit,
    CommitConflict,
    CommitLog,
    LandedFile,
    write_after_compactions,
)
from rtds_pipeline.lake.compaction import compact_source, housekeep, plan_day
from rtds_pipeline.lake.live import LakeState, live_files, load_state, write_checkpoint
from rtds_pipeline.lake.storage import Lake, open_lake
from rtds_pipeline.lake.writer import LandingWriter
from rtds_pipeline.settings import SourceConfig
from rtds_pipeline.testserver.app import ServerOptions, TestServer
from rtds_pipeline.testserver.config import Fault
from rtds_pipeline.testserver.log import offset_of

FAST = WindowLimits(max_seconds=20, idle_timeout=10, batch_bytes=1 << 20)
CLI = [sys.executable, "-m", "rtds_pipeline.cli"]
D1, D2, TODAY = "2026-11-20", "2026-11-21", dt.date(2026, 11, 25)


@pytest.fixture
def lake(tmp_path) -> Lake:
    return open_lake(str(tmp_path / "lake"))


def files_on_disk(lake: Lake, source: str = "events") -> set[str]:
    """Every data file of the source, relative to the lake root."""
    out = set()
    for area in ("landing", "dead_letter"):
        try:
            found = lake.fs.find(lake.path(area, f"source={source}"))
        except FileNotFoundError:
            continue
        root = lake.root.rstrip("/") + "/"
        out |= {p.removeprefix(f"{lake.protocol}://").removeprefix(root) for p in found}
    return out


def landed(lake: Lake, files: list[LandedFile]) -> list[tuple]:
    """(id, window_seq, window_pos, raw) of every row of these files, sorted."""
    out = []
    for f in files:
        with lake.fs.open(lake.path(f.path), "rb") as fh:
            t = pq.read_table(fh, columns=["id", "window_seq", "window_pos", "raw"])
        out += list(zip(*(t.column(c).to_pylist() for c in t.column_names), strict=True))
    return sorted(out)


def small_windows(lake: Lake, days: list[str], windows: int, per_day: int = 3) -> int:
    """`windows` windows, each landing `per_day` events in each of `days`: one file per day."""
    offset = 0
    for w in range(windows):
        evs = []
        for d in days:
            for i in range(per_day):
                offset += 1
                evs.append(event(f"e{offset}", "OPEN", f"{d}T{(w * 7 + i) % 24:02d}:00:00.000Z", offset))
        commit_window(lake, "events", evs)
    return offset


# ---------------------------------------------------------------------------- exclusive commits
def _race(lake_url: str, options: dict | None, tmp_path: Path, rounds: int) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    outs = [str(tmp_path / f"race-{n}.json") for n in ("a", "b")]
    procs = [ctx.Process(target=race, args=(lake_url, options, n, rounds, barrier, o))
             for n, o in zip(("a", "b"), outs, strict=True)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(600)
        assert p.exitcode == 0
    a, b = (orjson.loads(Path(o).read_bytes()) for o in outs)
    assert sorted(a["won"] + b["won"]) == list(range(1, rounds + 1)), "a sequence won twice or never"
    assert sorted(a["lost"] + b["lost"]) == list(range(1, rounds + 1))
    log = CommitLog(open_lake(lake_url, options), "events")
    owner = {s: "a" for s in a["won"]} | {s: "b" for s in b["won"]}
    # the record on the store is the winner's, never replaced by the loser
    assert all(c.resume_offset == f"{owner[c.window_seq]}-{c.window_seq}" for c in log.all())
    assert log.latest().window_seq == rounds


def test_two_processes_racing_for_300_sequences_each_win_exactly_once_locally(tmp_path):
    _race(str(tmp_path / "lake"), None, tmp_path, 300)


def test_two_processes_racing_for_300_sequences_on_s3(tmp_path, s3_server):
    _race(f"s3://lake/race-{random.randrange(10**9)}", s3_server, tmp_path, 300)


def test_two_ingest_processes_on_one_source_one_stops_and_leaves_no_files(fresh_server, tmp_path):
    srv = fresh_server(backlog=20_000)
    # Both first windows stall mid-stream, so both are in flight for sequence 1 together.
    srv.arm(Fault("stall", after=500, seconds=6, times=2))
    lake_dir = tmp_path / "lake"
    env = {**os.environ, "RTDS_BASE_URL": srv.url, "RTDS_LAKE_URL": str(lake_dir),
           "RTDS_WINDOW_MAX_EVENTS": "3000", "RTDS_IDLE_TIMEOUT": "30"}
    procs = [subprocess.Popen([*CLI, "ingest", "--windows", "4"], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    results = [(p.wait(300), *p.communicate()) for p in procs]
    codes = sorted(r[0] for r in results)
    assert codes == [0, 1], results
    loser = next(r for r in results if r[0] == 1)
    assert "another writer owns this source" in loser[2]
    lake = open_lake(str(lake_dir))
    state = load_state(CommitLog(lake, "events"))
    assert files_on_disk(lake) == state.listed(), "the loser left files behind"
    offsets = sorted(r[0] for r in _rows(lake, state.files(), "rtds_offset"))
    truth = [r["offset"] for r in srv.ground_truth()
             if r["type"] != "COMPLIANCE" and r["offset"] <= state.resume_offset]
    assert state.seq == 4 and offsets == truth  # every event up to the offset, landed once


def _rows(lake: Lake, files: list[LandedFile], *cols: str) -> list[tuple]:
    out = []
    for f in files:
        with lake.fs.open(lake.path(f.path), "rb") as fh:
            t = pq.read_table(fh, columns=list(cols))
        out += list(zip(*(t.column(c).to_pylist() for c in cols), strict=True))
    return out


def test_a_window_whose_sequence_a_compaction_took_commits_at_the_next(lake):
    small_windows(lake, [D1], 6)
    log = CommitLog(lake, "events")
    writer = LandingWriter(lake, "events", 7)
    writer.add(parse_batch(orjson.dumps(event("late", "OPEN", f"{D2}T01:00:00.000Z", 999)) + b"\n", 7))
    files, _ = writer.finish()
    assert compact_source(lake, "events", today=TODAY, min_file_age_s=0)  # takes sequence 7
    window = Commit(source="events", window_seq=7, resume_offset=offset_of(999),
                    previous_offset=None, first_offset=None, files=files, dead_letter_files=[],
                    events=1, dead_letters=0, offset_updates=0, keepalives=0, reconnects=0,
                    bytes_read=0, max_processed=None, committed_at=time.time(), stop_reason="t")
    write_after_compactions(log, window)
    assert [c.kind for c in log.since(6)] == [COMPACTION, "window"]
    assert log.latest().resume_offset == offset_of(999)
    # … but a window that took it means a second writer: this window's files go
    writer = LandingWriter(lake, "events", 9)
    writer.add(parse_batch(orjson.dumps(event("x", "OPEN", f"{D2}T02:00:00.000Z", 1000)) + b"\n", 9))
    mine, _ = writer.finish()
    with pytest.raises(CommitConflict, match="another writer owns this source"):
        write_after_compactions(log, dataclasses.replace(window, window_seq=8, files=mine))
    assert log.read(8).files == files  # the first writer's record stays as it was
    assert not lake.fs.exists(lake.path(mine[0].path))


# ---------------------------------------------------------------------------- reading the log
def test_since_and_latest_read_only_new_records_without_listing(lake, monkeypatch):
    small_windows(lake, [D1], 5)
    log = CommitLog(lake, "events")

    def no_listing(*a, **k):
        raise AssertionError("the log was listed")

    monkeypatch.setattr(log, "sequences", no_listing)
    assert [c.window_seq for c in log.since(3)] == [4, 5]
    assert log.since(5) == []
    assert log.latest().window_seq == 5
    # the pointer is advisory: stale, it costs probes, not correctness
    (Path(log.dir) / "_latest").write_text("2\n")
    assert log.latest().window_seq == 5


def test_old_records_without_kind_still_load(lake):
    commit = commit_window(lake, "events", [event("a", "OPEN", f"{D1}T01:00:00.000Z", 1)])
    raw = orjson.loads(commit.to_json())
    del raw["kind"], raw["replaces"]
    assert Commit.from_json(orjson.dumps(raw)).kind == "window"


# ---------------------------------------------------------------------------- committed view, orphans
def _orphan(lake: Lake, offset: int, age_s: float) -> str:
    writer = LandingWriter(lake, "events", 99)
    writer.add(parse_batch(orjson.dumps(event(f"ghost{offset}", "OPEN", f"{D1}T05:00:00.000Z",
                                              offset)) + b"\n", 99))
    files, _ = writer.finish()
    path = lake.path(files[0].path)
    os.utime(path, (time.time() - age_s, time.time() - age_s))
    return files[0].path


def test_the_committed_view_never_shows_orphans(lake, tmp_path):
    small_windows(lake, [D1, D2], 3)
    orphan = _orphan(lake, 500, 0)
    live = {f.path for f in live_files(lake, "events")}
    assert orphan not in live and orphan in files_on_disk(lake)
    assert {f.path for f in live_files(lake, "events", [D2])} == {p for p in live if D2 in p}
    env = {**os.environ, "RTDS_LAKE_URL": lake.root}
    out = subprocess.run([*CLI, "lake", "files", "--source", "events", "--duckdb"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    con = duckdb.connect()
    con.execute(out.stdout)
    assert con.execute("SELECT count(*), count(DISTINCT id) FROM landing").fetchall() == [(18, 18)]
    assert con.execute("SELECT count(*) FROM landing WHERE id LIKE 'ghost%'").fetchall() == [(0,)]
    # the README's two commands, with the plain DuckDB CLI
    (tmp_path / "landing.sql").write_text(out.stdout)
    cli = subprocess.run([str(Path(sys.executable).with_name("duckdb")), "-init", "landing.sql",
                          "-csv", "-c", "SELECT count(*) AS n FROM landing"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0 and cli.stdout.splitlines()[-2:] == ["n", "18"], cli


def test_a_writer_start_removes_what_a_killed_writer_left(fresh_server, tmp_path):
    srv = fresh_server(backlog=40_000)
    lake_dir = tmp_path / "lake"
    env = {**os.environ, "RTDS_BASE_URL": srv.url, "RTDS_LAKE_URL": str(lake_dir),
           "RTDS_WINDOW_MAX_EVENTS": "200000", "RTDS_IDLE_TIMEOUT": "10"}
    # a window that is killed once it has written files, before it can commit
    srv.arm(Fault("stall", after=30_000, seconds=60))
    proc = subprocess.Popen([*CLI, "ingest", "--windows", "1"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lake = open_lake(str(lake_dir))
    deadline = time.monotonic() + 120
    while not files_on_disk(lake) and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = files_on_disk(lake)
    assert left and not load_state(CommitLog(lake, "events")).listed()
    srv.clear_faults()
    # the next writer, with a grace period the leftovers are past, removes them first
    out = subprocess.run([*CLI, "ingest", "--windows", "1"], env={**env, "RTDS_ORPHAN_GRACE_HOURS": "0"},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert not left & files_on_disk(lake)
    assert files_on_disk(lake) == load_state(CommitLog(lake, "events")).listed()


def test_orphans_younger_than_the_grace_period_are_kept(lake):
    small_windows(lake, [D1], 2)
    young, old = _orphan(lake, 600, 10), _orphan(lake, 601, 7200)
    done = housekeep(lake, "events", today=TODAY, min_file_age_s=0)
    assert [lake.path(old)] == done.orphans_deleted
    assert young in files_on_disk(lake) and old not in files_on_disk(lake)


# ---------------------------------------------------------------------------- compaction
def test_compaction_leaves_at_most_four_sorted_files_per_settled_day_with_the_same_rows(lake):
    small_windows(lake, [D1, D2, TODAY.isoformat()], 12)
    before = live_files(lake, "events")
    done = housekeep(lake, "events", today=TODAY, min_file_age_s=0)
    assert sorted(d.day for d in done.compacted) == [D1, D2]
    after = live_files(lake, "events")
    per_day = {d: sum(1 for f in after if f.day == d) for d in {f.day for f in after}}
    assert per_day[D1] <= 4 and per_day[D2] <= 4
    assert per_day[TODAY.isoformat()] == 12, "a day that has not settled is left alone"
    assert done.max_files_per_settled_day <= 4
    assert landed(lake, after) == landed(lake, before)  # same rows, same stream positions
    for f in after:
        if f.path.rsplit("/", 1)[-1].startswith("compacted-"):
            with lake.fs.open(lake.path(f.path), "rb") as fh:
                occ = pq.read_table(fh, columns=["occurred"]).column("occurred").to_pylist()
            assert occ == sorted(occ)
    # superseded files stay for readers that listed them, then go after the retention
    superseded = [f.path for f in before if f.day in (D1, D2)]
    assert set(superseded) <= files_on_disk(lake)
    done = housekeep(lake, "events", today=TODAY, min_file_age_s=0, superseded_retention_s=0)
    assert sorted(done.superseded_deleted) == sorted(superseded)
    assert files_on_disk(lake) == {f.path for f in after}
    assert housekeep(lake, "events", today=TODAY, min_file_age_s=0).compacted == []  # nothing left to do


def test_the_compaction_record_supersedes_and_does_not_move_the_stream(lake):
    small_windows(lake, [D1], 6)
    log = CommitLog(lake, "events")
    before = log.latest()
    [day] = compact_source(lake, "events", today=TODAY, min_file_age_s=0)
    record = log.read(day.seq)
    assert record.kind == COMPACTION and record.resume_offset == before.resume_offset
    assert sorted(record.replaces) == sorted(f.path for c in log.all()[:6] for f in c.files)
    assert record.events == 0


def test_rebuilding_a_compacted_day_gives_the_same_events(lake):
    """Dedupe as `events` does (first copy by stream position) over the live files."""
    small_windows(lake, [D1], 8)
    copies = [event(f"e{i}", "OPEN", f"{D1}T23:00:00.000Z", 900 + i) for i in range(1, 10)]
    commit_window(lake, "events", copies)  # later copies of existing ids

    def events() -> list[tuple]:
        paths = [lake.url_of(f.path) for f in live_files(lake, "events", [D1])]
        return duckdb.execute(
            "SELECT id, arg_min(rtds_offset, (window_seq, window_pos)), count(*) "
            "FROM read_parquet(?, hive_partitioning = false) GROUP BY id ORDER BY id",
            [paths]).fetchall()

    before = events()
    assert compact_source(lake, "events", today=TODAY, min_file_age_s=0)
    assert events() == before


def test_checkpoint_gives_the_state_the_log_gives(lake):
    small_windows(lake, [D1, D2], 7)
    compact_source(lake, "events", today=TODAY, min_file_age_s=0)
    log = CommitLog(lake, "events")
    full = LakeState()
    for c in log.all():
        full.apply(c)
    write_checkpoint(log, full)
    small_windows(lake, [D2], 1)
    state = load_state(log)
    again = LakeState()
    for c in log.all():
        again.apply(c)
    assert state == again and state.seq == full.seq + 1


def test_plan_day_merges_small_files_and_leaves_big_ones():
    def f(name: str, size: int) -> LandedFile:
        return LandedFile(name, 1, size, D1, f"{D1}T00:00:{len(name):02d}Z", None)

    big = [f(f"big{i}", 900) for i in range(3)]
    small = [f(f"s{i}", 10) for i in range(20)]
    groups = plan_day(big + small, max_files=4, target_bytes=1000)
    assert sorted(x.path for g in groups for x in g) == sorted(x.path for x in small)
    assert plan_day(big, max_files=4, target_bytes=1000) == []


def test_compaction_on_the_s3_server(s3_server):
    lake = open_lake(f"s3://lake/compact-{random.randrange(10**9)}", s3_server)
    small_windows(lake, [D1], 6)
    before = landed(lake, live_files(lake, "events"))
    done = housekeep(lake, "events", today=TODAY, min_file_age_s=0, superseded_retention_s=0)
    assert [d.day for d in done.compacted] == [D1]
    after = live_files(lake, "events")
    assert len(after) == 1 and landed(lake, after) == before
    assert files_on_disk(lake) == {f.path for f in after}


# ---------------------------------------------------------------------------- the stream's head
def test_a_stream_behind_the_committed_offset_fails_loudly(fresh_server, tmp_path):
    srv = fresh_server(backlog=2000)
    lake = open_lake(str(tmp_path / "lake"))
    src = SourceConfig(name="events", base_url=srv.url)
    ingest_window(src, lake, FAST)
    idle = ingest_window(src, lake, FAST)
    assert idle.commit is None and idle.lag_s == 0.0  # idle at the head: lag measured, 0
    # the lake says it has read far beyond what this server has ever had (a server restarted
    # without its state, another app): never "caught up" forever
    log = CommitLog(lake, "events")
    last = log.latest()
    ahead = offset_of(srv.log().next_seq + 5000)
    log.write(dataclasses.replace(last, window_seq=last.window_seq + 1, resume_offset=ahead,
                                  files=[], kind=RESET))
    with pytest.raises(StreamHeadBehind, match="behind the lake's committed resume offset"):
        ingest_window(src, lake, FAST)
    env = {**os.environ, "RTDS_BASE_URL": srv.url, "RTDS_LAKE_URL": str(tmp_path / "lake")}
    out = subprocess.run([*CLI, "ingest"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "lake reset-offset events --to" in out.stderr
    # the way out the message gives
    out = subprocess.run([*CLI, "lake", "reset-offset", "events", "--to", last.resume_offset],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    srv.generate(10)
    new = [r for r in srv.ground_truth() if r["type"] != "COMPLIANCE" and r["offset"] > last.resume_offset]
    assert ingest_window(src, lake, FAST).stats.events == len(new) > 0


def _stream_of(srv: TestServer) -> list[tuple[str, str, str]]:
    return [(r["offset"], r["id"], r["type"]) for r in srv.ground_truth()]


def test_a_restarted_test_server_serves_what_it_retained_and_goes_on(tmp_path):
    """Read part of the backlog, restart the server (its state dir kept), read on: the events
    read are exactly the stream of one uninterrupted life — same events, same offsets, no second
    backlog, and the live events after the restart follow on from the first life's."""
    with TestServer(ServerOptions(port=0, backlog=8000, seed=1)) as one_life:
        one_life.generate(700)
        uninterrupted = _stream_of(one_life)
    state = tmp_path / "state"
    lake = open_lake(str(tmp_path / "lake"))
    with TestServer(ServerOptions(port=0, backlog=8000, seed=1, state_dir=state)) as srv:
        src = SourceConfig(name="events", base_url=srv.url)
        part = dataclasses.replace(FAST, max_events=1200, batch_bytes=64 << 10)
        assert 0 < ingest_window(src, lake, part).stats.events < 6000  # part of it
        before = srv.ground_truth()
    with TestServer(ServerOptions(port=0, backlog=8000, seed=1, state_dir=state)) as srv:
        assert srv.ground_truth() == before  # the same events (payloads too), the same offsets
        srv.generate(700)
        src = SourceConfig(name="events", base_url=srv.url)
        while ingest_window(src, lake, FAST).commit is not None:
            pass
        restarted = _stream_of(srv)
    assert restarted == uninterrupted
    files = live_files(lake, "events")
    read = duckdb.execute("SELECT rtds_offset, id, type FROM read_parquet(?) ORDER BY 1",
                          [[lake.path(f.path) for f in files]]).fetchall()
    assert read == [e for e in restarted if e[2] != "COMPLIANCE"]


def test_a_test_server_whose_state_cannot_be_restored_goes_on_after_its_offsets(tmp_path):
    """A state of another generator version (or unreadable) is not used: the new stream starts
    after every offset the old one reserved, and repeats none of its events."""
    state = tmp_path / "state"
    with TestServer(ServerOptions(port=0, backlog=500, seed=1, state_dir=state)) as srv:
        srv.generate(100)
        old = _stream_of(srv)
    (state / "streams.pickle").write_bytes(b"not a pickle")
    with TestServer(ServerOptions(port=0, backlog=500, seed=1, state_dir=state)) as srv:
        new = _stream_of(srv)
    assert len(new) >= 500 and int(new[0][0]) > int(old[-1][0])
    assert not {e[1] for e in new} & {e[1] for e in old}


# ---------------------------------------------------------------------------- Dagster
def test_the_housekeeping_job_runs_on_a_schedule_and_reports_on_the_landing_asset(tmp_path, lake):
    from rtds_pipeline.defs import build_definitions
    from rtds_pipeline.settings import load_settings

    small_windows(lake, [D1], 6)
    settings = load_settings({"RTDS_LAKE_URL": lake.root, "RTDS_WAREHOUSE": str(tmp_path / "w.duckdb"),
                              "RTDS_FIRST_DAY": D1, "RTDS_COMPACT_MIN_AGE_HOURS": "0"})
    defs = build_definitions(settings)
    schedule = defs.resolve_schedule_def("lake_housekeeping_schedule")
    assert schedule.job_name == "lake_housekeeping"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("lake_housekeeping").execute_in_process(instance=instance)
        assert result.success
        obs = [e.asset_observation_data.asset_observation for e in result.all_events
               if e.event_type_value == "ASSET_OBSERVATION"]
        by_key = {o.asset_key.to_user_string(): o.metadata for o in obs}
        assert by_key["landing/events"]["days_compacted"].value == 1
        assert by_key["landing/events"]["max_files_per_settled_day"].value <= 4
    assert len(live_files(lake, "events", [D1])) == 1


# ---------------------------------------------------------------------------- test server memory
MEMORY_PROBE = """
import gc, sys
from rtds_pipeline.testserver.log import StreamLog
def rss(): return int(open("/proc/self/statm").read().split()[1]) * 4096
log = StreamLog(0)
before = rss()
log.build_backlog(int(sys.argv[1]), 3 * 86_400_000)
gc.collect()
print((rss() - before) / len(log), log.bytes_retained / len(log))
"""


def test_the_test_servers_log_holds_a_backlog_compressed():
    """≤ 1 GB for a 2M-event backlog means ≤ ~450 bytes per event beside the interpreter; the
    serialized events are ~1 KB each, so they must be held compressed."""
    out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, "100000"], capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    per_event, line_bytes = map(float, out.stdout.split())
    assert line_bytes > 500 and per_event < 400, out.stdout


def test_filtered_readers_get_every_line_back_from_compressed_segments():
    from rtds_pipeline.testserver.log import SEGMENT_EVENTS, StreamLog
    log = StreamLog(seed=4, retention_events=3 * SEGMENT_EVENTS + 100)
    log.generate(6 * SEGMENT_EVENTS + 7, 0, 10**6)
    assert log.first_seq % SEGMENT_EVENTS and len(log) == 3 * SEGMENT_EVENTS + 100  # mid-segment
    seen = {r["offset"]: r for r in log.ground_truth()}
    assert len(seen) == len(log)
    for seq in range(log.first_seq, log.next_seq):
        event = orjson.loads(log.line(seq))
        assert event["offset"] == offset_of(seq) and event["id"] == log.id_of(seq)
        assert event["type"] == log.type_of(seq)
    assert any(log.type_of(s) == "COMPLIANCE" for s in range(log.first_seq, log.next_seq))


def test_the_warehouse_rebuilds_a_compacted_day_to_the_same_events(lake, tmp_path):
    from rtds_pipeline.warehouse import events as wh
    from rtds_pipeline.warehouse.store import Warehouse

    small_windows(lake, [D1], 8)
    commit_window(lake, "events", [event(f"e{i}", "OPEN", f"{D1}T23:00:00.000Z", 900 + i)
                                   for i in range(1, 6)])  # later copies of existing ids
    src = [SourceConfig("events")]

    def build(warehouse: Warehouse) -> list[tuple]:
        with warehouse.writer() as con:
            wh.load_all(con, warehouse.lake, src, "events")
            wh.rebuild_days(con, warehouse.lake, "events", [D1])
            assert wh.check_days(con, warehouse.lake, "events", [D1]).ok
            return con.execute("SELECT * FROM events ORDER BY id").fetchall()

    warehouse = Warehouse(tmp_path / "wh.duckdb", lake)
    before = build(warehouse)
    assert compact_source(lake, "events", today=TODAY, min_file_age_s=0)
    assert build(warehouse) == before
    # a warehouse that sees the windows and the compaction that replaced them in one sync
    shutil.copytree(lake.root, tmp_path / "late-lake", ignore=shutil.ignore_patterns("tables"))
    late = Warehouse(tmp_path / "late" / "wh.duckdb", open_lake(str(tmp_path / "late-lake")))
    assert build(late) == before


def test_files_committed_recently_wait_for_the_next_compaction(lake):
    # No minimum age by default (the loader reads a compaction only after the windows it
    # supersedes); RTDS_COMPACT_MIN_AGE_HOURS still holds young files back when set.
    small_windows(lake, [D1], 6)
    assert compact_source(lake, "events", today=TODAY, min_file_age_s=3600) == []
    assert len(live_files(lake, "events", [D1])) == 6
    assert compact_source(lake, "events", today=TODAY)  # the default: compacted now
    assert len(live_files(lake, "events", [D1])) == 1


def test_lake_compact_on_demand_from_the_command_line(lake):
    small_windows(lake, [D1, D2], 6)
    env = {**os.environ, "RTDS_LAKE_URL": lake.root, "RTDS_SUPERSEDED_RETENTION_HOURS": "0",
           "RTDS_COMPACT_MIN_AGE_HOURS": "0"}
    out = subprocess.run([*CLI, "lake", "compact", "--source", "events"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "events: 2 day(s) compacted, 12 superseded file(s) deleted" in out.stdout
    assert len(live_files(lake, "events")) == 2 and len(files_on_disk(lake)) == 2
    status = subprocess.run([*CLI, "lake", "status"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert "events: offset 1000000000036, 8 commits, 2 files, 36 rows" in status.stdout


def test_a_reading_run_behind_the_stream_fails_the_lag_check_with_the_reason(fresh_server, tmp_path):
    from dagster_runs import instance, landing_events, read_run

    from rtds_pipeline.defs import build_definitions
    from rtds_pipeline.settings import load_settings

    srv = fresh_server(backlog=1000)
    settings = load_settings({"RTDS_BASE_URL": srv.url, "RTDS_LAKE_URL": str(tmp_path / "lake"),
                              "RTDS_WAREHOUSE": str(tmp_path / "w.duckdb")})
    defs = build_definitions(settings)
    lake = defs.resources["lake"].lake()
    small_windows(lake, [D1], 1)
    log = CommitLog(lake, "events")
    last = log.latest()
    log.write(dataclasses.replace(last, window_seq=2, files=[], kind=RESET,
                                  resume_offset=offset_of(srv.log().next_seq + 100)))
    with instance() as inst:
        result = read_run(defs, inst, raise_on_error=False)
    mats, [check] = landing_events(result)
    assert not mats and check.check_name == "stream_lag" and not check.passed
    assert check.severity == dg.AssetCheckSeverity.ERROR
    failure = result.failure_data_for_node(result.job_def.nodes[0].name)
    assert "behind the lake's committed resume offset" in failure.error.message
    # Retrying cannot help: the run failed at once.
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]


def test_any_writer_that_loses_a_sequence_loses_its_files_too(lake):
    """What a webhook receiver or any other writer gets from `CommitLog.write` alone."""
    first = commit_window(lake, "events", [event("a", "OPEN", f"{D1}T01:00:00.000Z", 1)])
    writer = LandingWriter(lake, "events", 1)
    writer.add(parse_batch(orjson.dumps(event("b", "OPEN", f"{D1}T02:00:00.000Z", 1)) + b"\n", 1))
    files, _ = writer.finish()
    with pytest.raises(CommitConflict):
        CommitLog(lake, "events").write(dataclasses.replace(first, files=files))
    assert files_on_disk(lake) == {f.path for f in first.files}
