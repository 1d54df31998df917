"""`make run`: the whole pipeline on the embedded defaults.

Starts the built-in test server (live traffic over a 3-day backlog) and `dagster dev` with the
sensors running, so within a minute the Dagster UI shows landing materializations and `events`
partitions filling, and `data/warehouse.duckdb` can be queried read-only. Ctrl-C stops both.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from rtds_pipeline.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
PORT = int(os.environ.get("RTDS_TESTSERVER_PORT", "8717"))
UI_PORT = int(os.environ.get("RTDS_UI_PORT", "3000"))


def wait_http(url: str, proc: subprocess.Popen[bytes], seconds: float) -> bool:
    """True once `url` answers; False if `proc` exits or `seconds` pass first."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            httpx.get(url, timeout=1)
            return True
        except httpx.TransportError:
            time.sleep(0.5)
    return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then after 30 s SIGKILL to the whole process group (Dagster's code servers too)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    # Started from a script with `&`, SIGINT arrives ignored and children would inherit that (and
    # `dagster dev` maps SIGTERM onto it): install handlers so SIGINT/SIGTERM stop everything.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    dagster_home = Path(os.environ.get("DAGSTER_HOME") or ROOT / "dagster_home")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(dagster_home),
        "RTDS_BASE_URL": os.environ.get("RTDS_BASE_URL", f"http://127.0.0.1:{PORT}"),
        # Short windows and ticks: rows are queryable within a minute of arriving.
        "RTDS_WINDOW_SECONDS": os.environ.get("RTDS_WINDOW_SECONDS", "10"),
        "RTDS_TICK_SECONDS": os.environ.get("RTDS_TICK_SECONDS", "10"),
    }
    procs: list[subprocess.Popen[bytes]] = []
    try:
        server = subprocess.Popen(
            [sys.executable, "-m", "rtds_pipeline.cli", "testserver", "--port", str(PORT),
             "--rate", os.environ.get("RTDS_TESTSERVER_RATE", "200"),
             "--backlog", os.environ.get("RTDS_TESTSERVER_BACKLOG", "50000"),
             # A bounded stream: 300k events are 25 minutes at 200 events/s, ~50 MB of memory.
             "--retention-events", os.environ.get("RTDS_TESTSERVER_RETENTION_EVENTS", "300000"),
             "--state-dir", os.environ.get("RTDS_TESTSERVER_STATE_DIR",
                                           str(ROOT / "data" / "testserver")),
             *(["--no-quirks"] if os.environ.get("RTDS_TESTSERVER_QUIRKS") == "0" else [])],
            cwd=ROOT, start_new_session=True)
        procs.append(server)
        if not wait_http(f"http://127.0.0.1:{PORT}/admin/stats", server, 180):
            print("the test server did not start; see its output above", file=sys.stderr)
            return 1
        dagster = subprocess.Popen(
            [sys.executable, "-m", "dagster", "dev", "-w", str(ROOT / "workspace.yaml"),
             "-h", "127.0.0.1", "-p", str(UI_PORT)], cwd=ROOT, env=env, start_new_session=True)
        procs.append(dagster)
        if not wait_http(f"http://127.0.0.1:{UI_PORT}/server_info", dagster, 180):
            print("dagster dev did not start; see its output above", file=sys.stderr)
            return 1
        print(f"\n  Dagster UI:  http://127.0.0.1:{UI_PORT}   (sensors rtds_events, "
              f"rtds_compliance and rtds_marts are running)\n"
              f"  Warehouse:   duckdb -readonly {load_settings(env).warehouse_path}\n"
              f"               or: .venv/bin/rtds-pipeline sql \"select count(*) from events\"\n"
              f"  Ctrl-C stops everything.\n", flush=True)
        return dagster.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        for proc in reversed(procs):
            _stop(proc)


if __name__ == "__main__":
    raise SystemExit(main())
