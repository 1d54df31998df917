"""Stream client, window reader and landing zone against the test server over real HTTP."""

from __future__ import annotations

import dataclasses
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter

import duckdb
import orjson
import pyarrow.parquet as pq
import pytest

from rtds_pipeline.allocator import DIRTY_DECAY_MS, JEMALLOC_CONF
from rtds_pipeline.extract.errors import (
    BadRequest,
    NoDataYet,
    NotEntitled,
    RedirectLoop,
    Unauthorized,
)
from rtds_pipeline.extract.ingest import WindowOutcome, ingest_window
from rtds_pipeline.extract.reader import WindowLimits
from rtds_pipeline.lake.commits import CommitLog
from rtds_pipeline.lake.live import collect_orphans, live_files
from rtds_pipeline.lake.storage import Lake, open_lake
from rtds_pipeline.settings import SourceConfig
from rtds_pipeline.testserver.config import Fault

FAST = WindowLimits(max_seconds=20, idle_timeout=10, batch_bytes=1 << 20)


def source_for(srv, **kw) -> SourceConfig:
    return SourceConfig(name=kw.pop("name", "events"), base_url=srv.url, **kw)


def drain(source: SourceConfig, lake: Lake, limits: WindowLimits = FAST, windows: int = 20) -> list[WindowOutcome]:
    """Ingest until a window brings nothing new."""
    outs = []
    for _ in range(windows):
        out = ingest_window(source, lake, limits)
        outs.append(out)
        if out.stats.events == 0 and out.stats.dead_letters == 0:
            break
    return outs


def committed_rows(lake: Lake, key: str = "events") -> list[dict]:
    rows = []
    for f in live_files(lake, key):
        with lake.fs.open(lake.path(f.path), "rb") as fh:
            rows.extend(pq.read_table(fh, columns=["id", "rtds_offset", "type", "raw"]).to_pylist())
    return rows


def assert_matches_ground_truth(srv, lake, key="events", types=lambda t: t != "COMPLIANCE"):
    truth = [r for r in srv.ground_truth() if types(r["type"])]
    rows = committed_rows(lake, key)
    landed = Counter(r["rtds_offset"] for r in rows)
    assert max(landed.values()) == 1, "a delivered copy landed twice"
    assert set(landed) == {r["offset"] for r in truth}, "events lost or invented"
    return rows


def test_windows_land_every_event_once_with_raw_json(fresh_server, tmp_path):
    srv = fresh_server(backlog=5000)
    lake = open_lake(str(tmp_path / "lake"))
    outs = drain(source_for(srv), lake)
    assert outs[0].stats.stop_reason.startswith("caught up")
    rows = assert_matches_ground_truth(srv, lake)
    truth = {r["offset"]: r for r in srv.ground_truth()}
    for r in rows[:200]:
        assert orjson.loads(r["raw"]) == truth[r["rtds_offset"]]["event"]
    # duplicates the server sent are landed as the copies they are (dedupe is downstream)
    assert sum(1 for r in truth.values() if r["duplicate"] and r["type"] != "COMPLIANCE") == \
        len(rows) - len({r["id"] for r in rows})
    # DuckDB reads the landing as plain Hive-partitioned Parquet
    n = duckdb.sql(f"select count(*) from read_parquet('{tmp_path}/lake/landing/**/*.parquet', "
                   f"hive_partitioning=true)").fetchall()[0][0]
    assert n == len(rows)


def test_landing_partitions_by_occurred_date(fresh_server, tmp_path):
    srv = fresh_server(backlog=3000)
    lake = open_lake(str(tmp_path / "lake"))
    drain(source_for(srv), lake)
    bad = duckdb.sql(f"""select count(*) from read_parquet('{tmp_path}/lake/landing/**/*.parquet',
                         hive_partitioning=true)
                         where cast(coalesce(occurred, processed) as date) <> occurred_date""").fetchall()[0][0]
    assert bad == 0


def test_resume_continues_after_the_committed_offset(fresh_server, tmp_path):
    srv = fresh_server(backlog=3000)
    lake = open_lake(str(tmp_path / "lake"))
    src = source_for(srv)
    ingest_window(src, lake, dataclasses.replace(FAST, max_events=1000, batch_bytes=64 << 10))
    first = CommitLog(lake, "events").latest()
    assert first is not None and 1000 <= first.events < 3000
    srv.generate(500)
    drain(src, lake)
    assert_matches_ground_truth(srv, lake)


def test_max_events_stops_the_window_even_with_large_batches(fresh_server, tmp_path):
    srv = fresh_server(backlog=5000)
    lake = open_lake(str(tmp_path / "lake"))
    out = ingest_window(source_for(srv), lake, dataclasses.replace(FAST, max_events=1000,
                                                                   batch_bytes=64 << 20))
    # Stops within one received chunk of the limit, although the batch is far from full.
    assert out.stats.stop_reason == "max events"
    assert 1000 <= out.stats.events < 2000


@pytest.mark.parametrize("fault", [
    Fault("eof", after=700), Fault("reset", after=900), Fault("cut_line", after=1100),
    Fault("status", status=503, times=3), Fault("status", status=500, times=1),
])
def test_faults_lose_nothing_and_invent_nothing(fresh_server, tmp_path, fault):
    srv = fresh_server(backlog=4000)
    srv.arm(fault)
    lake = open_lake(str(tmp_path / "lake"))
    outs = drain(source_for(srv), lake, dataclasses.replace(FAST, batch_bytes=64 << 10))
    assert sum(o.stats.reconnects for o in outs) >= 1
    assert_matches_ground_truth(srv, lake)


def test_malformed_line_goes_to_dead_letters_and_the_stream_goes_on(fresh_server, tmp_path):
    srv = fresh_server(backlog=3000)
    srv.arm(Fault("malformed", after=100))
    lake = open_lake(str(tmp_path / "lake"))
    outs = drain(source_for(srv), lake)
    assert sum(o.stats.dead_letters for o in outs) == 1
    commit = CommitLog(lake, "events").read(1)
    dead = lake.fs.cat_file(lake.path(commit.dead_letter_files[0].path)).decode()
    assert "broken" in dead and '"position":100' in dead
    assert_matches_ground_truth(srv, lake)


def test_stall_past_the_idle_watchdog_reconnects(fresh_server, tmp_path):
    srv = fresh_server(backlog=3000, keepalive_seconds=60)
    srv.arm(Fault("stall", after=500, seconds=30))
    lake = open_lake(str(tmp_path / "lake"))
    limits = dataclasses.replace(FAST, idle_timeout=1.5, batch_bytes=64 << 10)
    src = source_for(srv)
    out = ingest_window(src, lake, dataclasses.replace(limits, max_events=2900))
    assert out.stats.reconnects >= 1 and any("no data for" in e for e in out.stats.errors)
    assert out.stats.events >= 2000


def test_307_pinning_is_followed(fresh_server, tmp_path):
    srv = fresh_server(backlog=1000, redirect="stale")
    lake = open_lake(str(tmp_path / "lake"))
    drain(source_for(srv), lake)
    assert_matches_ground_truth(srv, lake)


def test_endless_307_loop_is_capped_and_fails_loudly(fresh_server, tmp_path):
    srv = fresh_server(backlog=100, redirect="always")
    lake = open_lake(str(tmp_path / "lake"))
    with pytest.raises(RedirectLoop) as info:
        ingest_window(source_for(srv), lake, dataclasses.replace(FAST, max_seconds=2))
    assert "307" in str(info.value) and srv.url in str(info.value)
    assert CommitLog(lake, "events").latest() is None


@pytest.mark.parametrize(("kw", "error", "fragment"), [
    ({"token_env": "RTDS_TEST_BAD_TOKEN"}, Unauthorized, "401"),
    ({"filters": ({"types": ["SEND", "CUSTOM"]},), "token_env": "RTDS_TEST_PUSH_ONLY"}, NotEntitled, "CUSTOM"),
    ({"app_key": "empty-app", "token_env": "RTDS_TEST_EMPTY"}, NoDataYet, "no data"),
])
def test_fatal_errors_surface_with_actionable_messages(fresh_server, tmp_path, monkeypatch, kw, error, fragment):
    monkeypatch.setenv("RTDS_TEST_BAD_TOKEN", "nope")
    monkeypatch.setenv("RTDS_TEST_PUSH_ONLY", "push-only")
    monkeypatch.setenv("RTDS_TEST_EMPTY", "empty-token")
    srv = fresh_server(backlog=100)
    srv.log("empty-app").__init__(seed=1)  # no data yet
    lake = open_lake(str(tmp_path / "lake"))
    with pytest.raises(error) as info:
        ingest_window(source_for(srv, **kw), lake, FAST)
    assert fragment in str(info.value)
    if error is NotEntitled:
        assert info.value.types == ["CUSTOM"]


def test_bad_request_shows_the_servers_reason(fresh_server, tmp_path):
    srv = fresh_server(backlog=100, strict=True)
    lake = open_lake(str(tmp_path / "lake"))
    src = source_for(srv, filters=({"notifications": [{"push_id": "x"}]},))
    with pytest.raises(BadRequest) as info:
        ingest_window(dataclasses.replace(src), lake, FAST)
    assert "notifications" in str(info.value)


def test_revoked_token_stops_without_looping(fresh_server, tmp_path, monkeypatch):
    monkeypatch.setenv("RTDS_TEST_REVOCABLE", "revocable")
    srv = fresh_server(backlog=200)
    srv.revoke("revocable")
    lake = open_lake(str(tmp_path / "lake"))
    t0 = time.monotonic()
    with pytest.raises(Unauthorized, match="revoked"):
        ingest_window(source_for(srv, token_env="RTDS_TEST_REVOCABLE"), lake, FAST)
    assert time.monotonic() - t0 < 5




def test_compliance_source_lands_only_compliance_events(fresh_server, tmp_path):
    srv = fresh_server(backlog=5000)
    lake = open_lake(str(tmp_path / "lake"))
    drain(source_for(srv, name="compliance", kind="compliance"), lake)
    assert_matches_ground_truth(srv, lake, "compliance", types=lambda t: t == "COMPLIANCE")


def test_partition_readers_together_land_the_whole_stream(fresh_server, tmp_path):
    srv = fresh_server(backlog=3000)
    lake = open_lake(str(tmp_path / "lake"))
    rows = []
    for i in range(3):
        src = source_for(srv, subset={"type": "PARTITION", "count": 3, "selection": i})
        assert src.key == f"events-p{i}of3"
        drain(src, lake)
        rows += committed_rows(lake, src.key)
    truth = {r["offset"] for r in srv.ground_truth() if r["type"] != "COMPLIANCE"}
    assert sorted(r["rtds_offset"] for r in rows) == sorted(truth)


def test_s3_lake_on_a_real_object_store(fresh_server, s3_server):
    srv = fresh_server(backlog=3000)
    lake = open_lake("s3://lake/run-" + str(random.randrange(10**9)), s3_server)
    drain(source_for(srv), lake)
    assert_matches_ground_truth(srv, lake)
    con = duckdb.connect()
    con.register_filesystem(lake.fs)
    n = con.execute(f"select count(*) from read_parquet('s3://{lake.root}/landing/**/*.parquet')").fetchall()[0][0]
    assert n == len(committed_rows(lake))


def test_the_command_line_ingests_windows_that_duckdb_reads_and_lake_status_reports(fresh_server, tmp_path):
    """The issue's "done when", as a user types it: `ingest --windows 3`, then `lake status`."""
    srv = fresh_server(backlog=5_000)
    lake_dir = tmp_path / "lake"
    env = {**os.environ, "RTDS_BASE_URL": srv.url, "RTDS_LAKE_URL": str(lake_dir),
           "RTDS_WINDOW_MAX_EVENTS": "2000", "RTDS_IDLE_TIMEOUT": "10"}
    cli = [sys.executable, "-m", "rtds_pipeline.cli"]
    out = subprocess.run([*cli, "ingest", "--windows", "3"], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lake = open_lake(str(lake_dir))
    commits = CommitLog(lake, "events").all()
    assert len(commits) == 3 and all(c.events > 0 for c in commits)
    n = duckdb.sql(f"SELECT count(*) FROM read_parquet('{lake_dir}/landing/**/*.parquet')").fetchall()[0][0]
    assert n == sum(c.events for c in commits) == len(committed_rows(lake))
    status = subprocess.run([*cli, "lake", "status"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert status.returncode == 0, status.stderr
    line = next(x for x in status.stdout.splitlines() if x.strip().startswith("events:"))
    assert f"offset {commits[-1].resume_offset}, 3 commits" in line and f"{n:,} rows" in line


@pytest.mark.slow
def test_sigkill_at_random_points_loses_nothing(fresh_server, tmp_path):
    """Kill the ingest process many times, including mid-commit; resume; compare with truth."""
    srv = fresh_server(backlog=60_000)
    lake_dir = tmp_path / "lake"
    env = {**os.environ, "RTDS_BASE_URL": srv.url, "RTDS_LAKE_URL": str(lake_dir),
           "RTDS_WINDOW_MAX_EVENTS": "4000", "RTDS_IDLE_TIMEOUT": "10"}
    cmd = [sys.executable, "-m", "rtds_pipeline.cli", "ingest", "--follow", "--max-seconds", "5"]
    rng = random.Random(42)
    for _ in range(12):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.8, 3.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    lake = open_lake(str(lake_dir))
    drain(SourceConfig(name="events", base_url=srv.url), lake,
          dataclasses.replace(FAST, max_events=20_000))
    assert_matches_ground_truth(srv, lake)
    # files written by killed windows are invisible, and collectable
    removed = collect_orphans(lake, CommitLog(lake, "events"), older_than_s=0)
    assert_matches_ground_truth(srv, lake)
    assert isinstance(removed, list)


@pytest.mark.parametrize(("chosen", "expected"), [(None, "jemalloc"), ("system", "system")])
def test_window_memory_pool_respects_an_explicit_choice(chosen: str | None, expected: str) -> None:
    """A window switches Arrow's default pool to jemalloc (it hands freed pages back), unless
    ARROW_DEFAULT_MEMORY_POOL chose one; a fresh process each, the switch being process-wide."""
    import pyarrow as pa
    try:
        pa.jemalloc_memory_pool()
    except NotImplementedError:
        pytest.skip("this pyarrow is built without jemalloc")
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    if chosen:
        env["ARROW_DEFAULT_MEMORY_POOL"] = chosen
    code = ("from rtds_pipeline.extract.ingest import return_memory_promptly; import pyarrow as pa; "
            "return_memory_promptly(); print(pa.default_memory_pool().backend_name)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == expected


@pytest.mark.parametrize("users", [None, "dirty_decay_ms:300"])
def test_jemalloc_options_are_set_before_pyarrow_loads_and_a_users_are_kept(users: str | None) -> None:
    env = {k: v for k, v in os.environ.items() if k != "JE_ARROW_MALLOC_CONF"}
    if users:
        env["JE_ARROW_MALLOC_CONF"] = users
    code = "import os, rtds_pipeline, pyarrow; print(os.environ['JE_ARROW_MALLOC_CONF'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == (users or JEMALLOC_CONF)


def test_this_pyarrows_jemalloc_reads_the_options() -> None:
    """Guards the variable's name and syntax across pyarrow upgrades: jemalloc prints the
    options it runs with (`stats_print`) when the process exits."""
    env = {**os.environ, "JE_ARROW_MALLOC_CONF": f"{JEMALLOC_CONF},stats_print:true"}
    out = subprocess.run([sys.executable, "-c", "import rtds_pipeline, pyarrow"], env=env,
                         capture_output=True, text=True, check=True)
    assert f"opt.dirty_decay_ms: {DIRTY_DECAY_MS} " in out.stderr
    assert "opt.muzzy_decay_ms: 0 " in out.stderr
