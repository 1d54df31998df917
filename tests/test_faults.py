"""Transient faults are survived, permanent ones fail loudly with what to do: 402 back-off across
windows, object-store outages retried for a bounded time, a refused resume offset repaired with
`lake reset-offset` — against the test server, SeaweedFS behind a fault proxy, and the CLI."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import pyarrow.parquet as pq
import pytest

from rtds_pipeline.extract.errors import BadRequest, TooManyConnections
from rtds_pipeline.extract.ingest import ingest_window, publish, reset_commit
from rtds_pipeline.extract.reader import Backoff, WindowLimits
from rtds_pipeline.lake.commits import CommitLog
from rtds_pipeline.lake.live import live_files
from rtds_pipeline.lake.retry import ObjectStoreUnavailable, StoreRetry
from rtds_pipeline.lake.storage import Lake, open_lake
from rtds_pipeline.settings import SourceConfig, load_settings
from rtds_pipeline.testserver.config import Fault
from rtds_pipeline.testserver.hostile import FaultProxy

FAST = WindowLimits(max_seconds=20, idle_timeout=10, batch_bytes=1 << 20)
CLI = [sys.executable, "-m", "rtds_pipeline.cli"]


def wait_until(condition, timeout: float = 120.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def landed_offsets(lake: Lake, key: str = "events") -> Counter:
    offsets: Counter = Counter()
    for f in live_files(lake, key):
        with lake.fs.open(lake.path(f.path), "rb") as fh:
            offsets.update(pq.read_table(fh, columns=["rtds_offset"]).column("rtds_offset").to_pylist())
    return offsets


def truth_offsets(srv) -> set[str]:
    return {r["offset"] for r in srv.ground_truth() if r["type"] != "COMPLIANCE"}


def drain(source: SourceConfig, lake: Lake, limits: WindowLimits = FAST, **kw) -> None:
    for _ in range(20):
        out = ingest_window(source, lake, limits, **kw)
        if out.stats.events == 0 and out.stats.dead_letters == 0 and "402" not in out.stats.stop_reason:
            return
    raise AssertionError("the stream did not drain in 20 windows")


def test_the_402_back_off_floor_is_30_s_by_default():
    assert WindowLimits().too_many_connections_s == 30.0
    assert load_settings({}).backoff_402_seconds == 30.0
    assert all(Backoff().delay(a, TooManyConnections("x")) >= 30.0 for a in range(5))


def test_a_402_ends_the_window_quietly_and_the_next_window_waits_it_out(fresh_server, tmp_path):
    """Today one 402 is fatal for a window shorter than the back-off (every sensor tick)."""
    srv = fresh_server(backlog=2_000)
    srv.arm(Fault("status", status=402, times=1))
    lake = open_lake(str(tmp_path / "lake"))
    src = SourceConfig(name="events", base_url=srv.url)
    limits = dataclasses.replace(FAST, too_many_connections_s=1.5)
    first = ingest_window(src, lake, dataclasses.replace(limits, max_seconds=0.5))
    assert first.stats.events == 0 and first.commit is None
    assert "402" in first.stats.stop_reason and first.stats.fatal is None
    drain(src, lake, limits)
    assert set(landed_offsets(lake)) == truth_offsets(srv)


def test_ingest_follow_survives_402s_and_goes_on(fresh_server, tmp_path):
    srv = fresh_server(backlog=3_000)
    srv.arm(Fault("status", status=402, times=3))
    lake_dir = tmp_path / "lake"
    env = {**os.environ, "RTDS_BASE_URL": srv.url, "RTDS_LAKE_URL": str(lake_dir),
           "RTDS_BACKOFF_402_SECONDS": "0.5", "RTDS_WINDOW_SECONDS": "2", "RTDS_IDLE_TIMEOUT": "10"}
    # Started as a background job (`cmd &`) is: with SIGINT ignored, which it must still obey.
    proc = subprocess.Popen([*CLI, "ingest", "--follow"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        lake = open_lake(str(lake_dir))
        truth = truth_offsets(srv)
        wait_until(lambda: set(landed_offsets(lake)) == truth, what="the backlog to land")
        assert proc.poll() is None, "ingest --follow stopped"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=120)  # a window in flight ends first
        except subprocess.TimeoutExpired:
            proc.kill()  # and close its pipes: the next test would see them as leaks
            proc.communicate()
            raise
    assert proc.returncode == 0, err
    assert "402" in out and "Traceback" not in err


def test_a_refused_resume_offset_says_how_to_repair_and_reset_offset_repairs_it(fresh_server, tmp_path):
    """Today a resume offset RTDS refuses blocks the source for good: every window is a 400."""
    srv = fresh_server(backlog=2_000)
    lake_dir = tmp_path / "lake"
    env = {**os.environ, "RTDS_BASE_URL": srv.url, "RTDS_LAKE_URL": str(lake_dir),
           "RTDS_WINDOW_MAX_EVENTS": "500", "RTDS_IDLE_TIMEOUT": "10"}
    run = lambda *a: subprocess.run([*CLI, *a], env=env, capture_output=True, text=True,  # noqa: E731
                                    timeout=120)
    assert run("ingest").returncode == 0
    # A well-formed offset this stream never issued (e.g. copied from another app): HTTP 400.
    moved = run("lake", "reset-offset", "events", "--to", "123")
    assert moved.returncode == 0, moved.stderr
    refused = run("ingest")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "HTTP 400" in refused.stderr and "rtds-pipeline lake reset-offset" in refused.stderr
    bad = run("lake", "reset-offset", "events", "--to", "abc")
    assert bad.returncode == 2 and "1 to 19 digits" in bad.stderr
    assert run("lake", "reset-offset", "events", "--to", "earliest").returncode == 0
    lake = open_lake(str(lake_dir))
    commits = CommitLog(lake, "events").all()
    assert [c.resume_offset for c in commits[1:]] == ["123", None]
    assert all(not c.files for c in commits[1:])
    assert run("ingest", "--windows", "6").returncode == 0
    assert set(landed_offsets(lake)) == truth_offsets(srv)


def test_reset_to_latest_skips_the_backlog_and_to_an_offset_resumes_after_it(fresh_server, tmp_path):
    srv = fresh_server(backlog=1_000)
    lake = open_lake(str(tmp_path / "lake"))
    src = SourceConfig(name="events", base_url=srv.url)
    log = CommitLog(lake, "events")
    publish(log, reset_commit(log, "LATEST"), StoreRetry(5))
    out = ingest_window(src, lake, FAST)
    assert out.stats.events == 0 and CommitLog(lake, "events").latest().stop_reason.startswith(
        "reset-offset to LATEST")
    truth = sorted(truth_offsets(srv))
    publish(log, reset_commit(log, truth[899]), StoreRetry(5))
    drain(src, lake)
    assert sorted(landed_offsets(lake)) == truth[900:]


def _s3_lake(s3_server, endpoint: str) -> Lake:
    options = {**s3_server, "endpoint_url": endpoint,
               # Fail fast inside s3fs/botocore, so StoreRetry's back-off is what is measured.
               "config_kwargs": {"retries": {"max_attempts": 1},
                                               "connect_timeout": 2, "read_timeout": 5}}
    return open_lake(f"s3://lake/faults-{random.randrange(10**9)}", options)


class _OnRetry(logging.Handler):
    """Calls `action` at the first object-store retry: the fault is seen, then healed."""

    def __init__(self, action) -> None:
        super().__init__(logging.WARNING)
        self.action, self.seen = action, threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if not self.seen.is_set() and "retrying" in record.getMessage():
            self.seen.set()
            self.action()


@pytest.mark.slow
def test_an_s3_outage_mid_window_is_retried_and_the_window_commits_once(fresh_server, s3_server):
    srv = fresh_server(backlog=3_000)
    target = ("127.0.0.1", int(s3_server["endpoint_url"].rsplit(":", 1)[1]))
    with FaultProxy(target) as proxy:
        lake = _s3_lake(s3_server, proxy.url)
        src = SourceConfig(name="events", base_url=srv.url)
        heal = _OnRetry(proxy.up)
        logging.getLogger("rtds_pipeline.lake.retry").addHandler(heal)
        try:
            # The outage starts while the window reads (before any file or the commit is written).
            out = ingest_window(src, lake, dataclasses.replace(FAST, stop_when_caught_up=False,
                                                               max_seconds=3),
                                progress=lambda stats, s: proxy.outages or proxy.down(),
                                store_retry=StoreRetry(60))
        finally:
            logging.getLogger("rtds_pipeline.lake.retry").removeHandler(heal)
        assert proxy.outages >= 1 and heal.seen.is_set()
        assert out.commit is not None and out.commit.events == len(truth_offsets(srv))
        drain(src, lake)
        landed = landed_offsets(lake)
        assert max(landed.values()) == 1 and set(landed) == truth_offsets(srv)


@pytest.mark.slow
def test_a_commit_whose_put_landed_before_the_outage_is_not_written_twice(s3_server, tmp_path):
    target = ("127.0.0.1", int(s3_server["endpoint_url"].rsplit(":", 1)[1]))
    with FaultProxy(target) as proxy:
        lake = _s3_lake(s3_server, proxy.url)
        log = CommitLog(lake, "events")
        commit = reset_commit(log, "1000000000001")
        log.write(commit)  # the PUT landed; pretend its answer was lost: publish retries it
        proxy.down()
        heal = _OnRetry(proxy.up)
        logging.getLogger("rtds_pipeline.lake.retry").addHandler(heal)
        try:
            publish(log, commit, StoreRetry(60))
        finally:
            logging.getLogger("rtds_pipeline.lake.retry").removeHandler(heal)
        assert [c.window_seq for c in log.all()] == [1]
        other = dataclasses.replace(commit, resume_offset="1000000000002")
        with pytest.raises(FileExistsError):  # another writer's commit is never taken for ours
            publish(log, other, StoreRetry(5))


@pytest.mark.slow
def test_an_object_store_that_stays_down_fails_with_a_message_and_commits_nothing(fresh_server, tmp_path):
    """Today: a raw botocore EndpointConnectionError traceback."""
    srv = fresh_server(backlog=500)
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    env = {**os.environ, "RTDS_BASE_URL": srv.url, "RTDS_LAKE_URL": "s3://lake/down",
           "RTDS_S3_ENDPOINT_URL": f"http://127.0.0.1:{dead}", "AWS_ACCESS_KEY_ID": "rtds",
           "AWS_SECRET_ACCESS_KEY": "rtds-secret", "RTDS_STORE_RETRY_SECONDS": "1"}
    out = subprocess.run([*CLI, "ingest"], env=env, capture_output=True, text=True, timeout=200)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    last = out.stderr.strip().splitlines()[-1]  # after the retries' warnings
    assert last.startswith("error: ") and "object store" in last and "Nothing was committed" in last


def test_store_retry_gives_up_after_its_time_with_what_failed(tmp_path):
    calls = []

    def refuse():
        calls.append(1)
        raise ConnectionRefusedError("connection refused")

    with pytest.raises(ObjectStoreUnavailable) as info:
        StoreRetry(seconds=0.3, max_delay_s=0.05).call("write x.parquet", refuse)
    assert len(calls) >= 2 and "write x.parquet" in str(info.value)
    assert "ConnectionRefusedError" in str(info.value)
    with pytest.raises(FileNotFoundError):  # a definite answer is not retried
        StoreRetry(seconds=5).call("read", lambda: (_ for _ in ()).throw(FileNotFoundError("x")))


def test_bad_request_names_the_resume_offset_only_when_there_is_one():
    assert "reset-offset" in str(BadRequest("expired", 400, "1000000000001"))
    assert "reset-offset" not in str(BadRequest("bad filter", 400))


def _reading_run(settings):
    """One reading run (until caught up) on a real temporary Dagster instance, with the reader's
    logger managed as dagster_home/dagster.yaml manages it: (result, the run's log lines)."""
    from dagster_runs import instance, read_run

    from rtds_pipeline.defs import build_definitions
    defs = build_definitions(settings)
    with instance() as inst:
        result = read_run(defs, inst, raise_on_error=False)
        logs = [e.user_message for e in inst.all_logs(result.run_id)]
    return result, logs


def test_a_reading_run_shows_402s_and_reconnects_in_its_logs_and_metadata(fresh_server, tmp_path):
    from dagster_runs import landing_events

    srv = fresh_server(backlog=3_000)
    srv.arm(Fault("status", status=402, times=2))
    srv.arm(Fault("reset", after=1_000))
    env = {"RTDS_BASE_URL": srv.url, "RTDS_LAKE_URL": str(tmp_path / "lake"),
           "RTDS_WAREHOUSE": str(tmp_path / "wh.duckdb"), "RTDS_BACKOFF_402_SECONDS": "0.5",
           "RTDS_WINDOW_SECONDS": "30"}
    result, logs = _reading_run(load_settings(env))
    assert result.success  # the run went on after the 402s and the reset, and landed the backlog
    [landing], [lag] = landing_events(result)
    meta = {k: v.value for k, v in landing.metadata.items()}
    assert meta["events"] == sum(1 for r in srv.ground_truth() if r["type"] != "COMPLIANCE")
    assert meta["reconnects"] == 3 and meta["server_errors"] == 2
    assert meta["backoff_seconds"] >= 2 * 0.5  # each 402 waited at least the configured back-off
    assert sum("HTTP 402" in e for e in meta["last_errors"]) == 2
    assert any("connection lost" in e or "closed" in e for e in meta["last_errors"])
    # Each retry is a line of the run's log: its cause and the delay before reconnecting.
    retries = [m for m in logs if "reconnecting in" in m]
    assert len(retries) == 3 and sum("HTTP 402" in m for m in retries) == 2
    assert lag.passed


def test_a_reading_run_fails_loudly_on_a_response_that_is_not_rtds(tmp_path):
    from rtds_pipeline.testserver.hostile import Behaviour, HostileServer

    with HostileServer(Behaviour.html()) as hostile:
        result, logs = _reading_run(load_settings({
            "RTDS_BASE_URL": hostile.url, "RTDS_LAKE_URL": str(tmp_path / "lake"),
            "RTDS_WAREHOUSE": str(tmp_path / "wh.duckdb")}))
    assert not result.success  # a failed run that says why, not a quiet one
    failure = result.failure_data_for_node(result.job_def.nodes[0].name)
    assert "text/html" in failure.error.message and "not an RTDS NDJSON stream" in failure.error.message


@pytest.mark.slow
def test_the_quick_chaos_run_loses_nothing_and_duplicates_nothing():
    """The subset of `python -m bench.chaos` that `make test` runs (the full run: BENCHMARKS.md),
    concurrent writers of one source included: commits are exclusive creates."""
    out = subprocess.run([sys.executable, "-m", "bench.chaos", "--quick", "--json"],
                         capture_output=True, text=True, timeout=600)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["faults"] >= 10, result
    assert (result["lost"], result["duplicated"], result["invented"], result["builds_blocked"]) \
        == (0, 0, 0, 0), result
    assert all(v == "ok" for v in result["hostile"].values()), result
    assert result["peak_rss_mb"] < result["rss_bound_mb"] and not result["problems"], result
    assert out.returncode == 0
