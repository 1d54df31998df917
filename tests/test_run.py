"""`make run` (rtds_pipeline/run.py) refuses to start on a port already taken: it would otherwise
take another test server's answers for its own and read that server's stream."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_make_run_refuses_a_test_server_port_in_use(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "RTDS_TESTSERVER_PORT": str(port), "DAGSTER_HOME": str(tmp_path),
               "RTDS_TESTSERVER_STATE_DIR": str(tmp_path / "testserver")}
        out = subprocess.run([sys.executable, "-m", "rtds_pipeline.run"], env=env,
                             capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert f"{port} (RTDS_TESTSERVER_PORT)" in out.stderr and "already in use" in out.stderr
    assert "Dagster UI" not in out.stdout  # nothing was started


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _published_refreshes(warehouse) -> set:
    """The marts refreshes readers can see (empty before the first)."""
    import duckdb

    if not warehouse.exists():
        return set()
    try:
        with duckdb.connect(str(warehouse), read_only=True) as con:
            return {r for (r,) in con.execute("SELECT DISTINCT refreshed_at FROM mart_freshness")
                    .fetchall()}
    except duckdb.Error:  # no marts yet, or the file is being replaced
        return set()


@pytest.mark.slow
def test_make_run_stops_everything_on_ctrl_c_and_goes_on_where_it_stopped(tmp_path, monkeypatch):
    """Two lives of `make run`: each publishes marts, Ctrl-C ends every process and leaves no run
    queued or started, and says so last; the second life's test server restores its streams
    (no second backlog) and the pipeline goes on from the lake."""
    import dagster as dg

    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home)
    warehouse = tmp_path / "warehouse.duckdb"
    env = {**os.environ, "DAGSTER_HOME": str(home), "RTDS_LAKE_URL": str(tmp_path / "lake"),
           "RTDS_WAREHOUSE": str(warehouse), "RTDS_TESTSERVER_STATE_DIR": str(tmp_path / "ts"),
           "RTDS_TESTSERVER_PORT": str(_free_port()), "RTDS_UI_PORT": str(_free_port()),
           "RTDS_TESTSERVER_BACKLOG": "3000", "RTDS_TESTSERVER_RATE": "50",
           "RTDS_MARTS_SECONDS": "5"}
    seen: set = set()
    for life in (1, 2):
        log = tmp_path / f"life{life}.log"
        with log.open("w") as console:  # a file: a pipe nobody reads would block the processes
            proc = subprocess.Popen([sys.executable, "-m", "rtds_pipeline.run"], env=env,
                                    cwd=ROOT, stdout=console, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        try:
            deadline = time.monotonic() + 400
            while not _published_refreshes(warehouse) - seen and time.monotonic() < deadline:
                assert proc.poll() is None, log.read_text()
                time.sleep(1)
            refreshed = _published_refreshes(warehouse) - seen
            assert refreshed, f"life {life}: no marts refresh published"
            seen |= refreshed
        finally:
            proc.send_signal(signal.SIGINT)  # what Ctrl-C sends to `make run`
            proc.wait(120)
        out = log.read_text()
        assert proc.returncode == 0, out
        lines = out.strip().splitlines()
        assert lines[-1].startswith("stopped: Dagster ("), lines[-5:]
        with pytest.raises(ProcessLookupError):
            os.killpg(proc.pid, 0)  # nothing of it is left
        monkeypatch.setenv("DAGSTER_HOME", str(home))
        with dg.DagsterInstance.get() as instance:
            unfinished = instance.get_run_records(dg.RunsFilter(statuses=[
                dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED,
                dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]))
            failed = instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
        assert not unfinished and not failed, (unfinished, failed)
        if life == 2:
            assert "restored the streams saved in" in out and "building a backlog" not in out
