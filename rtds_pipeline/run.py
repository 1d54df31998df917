"""`make run`: the whole pipeline on the embedded defaults.

Starts the built-in test server (live traffic over a 3-day backlog) and `dagster dev` with the
sensors running, so within a minute the Dagster UI shows landing materializations and `events`
partitions filling, and `data/warehouse.duckdb` can be queried read-only. Ctrl-C stops both.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from rtds_pipeline.protocol.loopback import TEST_SERVER_PORT
from rtds_pipeline.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
PORT = int(os.environ.get("RTDS_TESTSERVER_PORT", TEST_SERVER_PORT))
UI_PORT = int(os.environ.get("RTDS_UI_PORT", "3000"))
GRACE_S = 4.0  # how long the webserver and code servers get to stop before they are killed
DUCKDB_CLI = Path(sys.executable).with_name("duckdb")  # the duckdb-cli package, in .venv/bin
# `dagster dev` still works and is what the pinned release documents; its notice that `dg dev`
# (another package) supersedes it is one warning, filtered by its exact text.
DEV_COMMAND_WARNING = "ignore:Function `dev_command` is superseded"


def _shown(path: Path) -> str:
    """A path as the user would type it from the repository root."""
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


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


def port_in_use(port: int) -> bool:
    """Does something listen on 127.0.0.1:`port` (a socket in TIME_WAIT does not count)?"""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then after 30 s SIGKILL to the whole process group (Dagster's code servers too)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _start_webhook(env: dict[str, str], procs: list[subprocess.Popen[bytes]]) -> list[str] | None:
    """RTDS_WEBHOOK=1: also run the webhook receiver (source `webhook`, loopback, no auth; the
    source is in `env`, so Dagster sees it too) and make the test server POST its events to it as
    Airship's webhook integration would. Returns the test server's extra arguments ([] without
    RTDS_WEBHOOK=1), or None if the receiver did not start."""
    if os.environ.get("RTDS_WEBHOOK") != "1":
        return []
    port = int(os.environ.get("RTDS_WEBHOOK_PORT", "8718"))
    env.setdefault("RTDS_WEBHOOK_SOURCE", "webhook")
    receiver = subprocess.Popen(
        [sys.executable, "-m", "rtds_pipeline.cli", "webhook", "--port", str(port)],
        cwd=ROOT, env=env, start_new_session=True)
    procs.append(receiver)
    if not wait_http(f"http://127.0.0.1:{port}/healthz", receiver, 120):
        return None
    return ["--webhook-url", f"http://127.0.0.1:{port}/webhook",
            # 100, not Airship's default 10: at 200 events/s, 2 windows a second instead of ~18
            "--webhook-batch", os.environ.get("RTDS_WEBHOOK_BATCH", "100")]


def dagster_daemon_pid(dagster: subprocess.Popen[bytes]) -> int | None:
    """The `dagster-daemon` process `dagster dev` started (None if psutil is not installed)."""
    try:
        import psutil
    except ImportError:
        return None
    try:
        for child in psutil.Process(dagster.pid).children():
            if "dagster._daemon" in child.cmdline():
                return child.pid
    except psutil.Error:
        return None
    return None


def stop_dagster(dagster: subprocess.Popen[bytes], daemon_pid: int | None,
                 dagster_home: Path) -> int:
    """Stop `dagster dev` within seconds, with every run it started; returns how many runs were
    ended. Every step is safe to cut short, by design: the lake's commits are atomic (a window
    not committed is read again, from the commit log's resume offset), a load or marts refresh
    killed mid-way is finished or rolled back by the next one, a sensor's cursor only mirrors
    the lake, and run keys make a re-evaluated tick harmless.

    1. The daemon is killed first, so no tick or queued run launches anything any more. (A
       graceful stop would close its code locations under its sensor threads, which then log
       DagsterCodeLocationNotFoundError tracebacks.)
    2. The webserver and code servers get SIGTERM and a few seconds to close.
    3. Whatever of dagster dev's process group is left — runs in progress, in their own
       processes — is killed.
    4. Runs not finished (queued, starting, started) are marked canceled in Dagster's storage,
       so the UI shows none left running and the next start begins with a clean queue."""
    if daemon_pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(daemon_pid, signal.SIGKILL)
    if dagster.poll() is None:
        dagster.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            dagster.wait(GRACE_S)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(dagster.pid, signal.SIGKILL)
    dagster.wait()
    return cancel_unfinished_runs(dagster_home)


def cancel_unfinished_runs(dagster_home: Path) -> int:
    """Mark every run that is not finished as canceled (its processes are gone)."""
    import dagster as dg

    os.environ["DAGSTER_HOME"] = str(dagster_home)
    unfinished = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED,
                  dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED,
                  dg.DagsterRunStatus.CANCELING]
    with dg.DagsterInstance.get() as instance:
        records = instance.get_run_records(dg.RunsFilter(statuses=unfinished))
        for record in records:
            instance.report_run_canceled(
                record.dagster_run, message="stopped with `make run` (Ctrl-C); what it had not "
                                            "committed is read or loaded again on the next start")
    return len(records)


def main() -> int:
    # Started from a script with `&`, SIGINT arrives ignored and children would inherit that (and
    # `dagster dev` maps SIGTERM onto it): install handlers so SIGINT/SIGTERM stop everything.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
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
    dagster: subprocess.Popen[bytes] | None = None
    daemon_pid: int | None = None
    busy = [f"{port} ({what})" for port, what in ((PORT, "RTDS_TESTSERVER_PORT"),
                                                   (UI_PORT, "RTDS_UI_PORT")) if port_in_use(port)]
    if busy:
        print(f"port {' and '.join(busy)} already in use on 127.0.0.1: another `make run` or test "
              "server is running. Stop it, or choose free ports with those variables.",
              file=sys.stderr)
        return 1
    try:
        webhook_args = _start_webhook(env, procs)
        if webhook_args is None:
            print("the webhook receiver did not start; see its output above", file=sys.stderr)
            return 1
        server = subprocess.Popen(
            [sys.executable, "-m", "rtds_pipeline.cli", "testserver", "--port", str(PORT),
             *webhook_args,
             "--rate", os.environ.get("RTDS_TESTSERVER_RATE", "200"),
             "--backlog", os.environ.get("RTDS_TESTSERVER_BACKLOG", "50000"),
             # A bounded stream: 300k events are 25 minutes at 200 events/s, ~60 MB of memory.
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
            [sys.executable, "-W", DEV_COMMAND_WARNING, "-m", "dagster", "dev",
             "-w", str(ROOT / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(UI_PORT),
             # The daemon's routine lines (every tick, queue pass and run check: ~70 a minute)
             # stay out of the console; the runs' own logs (windows, loads, refreshes), warnings
             # and errors stay in.
             "--log-level", "warning"],
            cwd=ROOT, env=env, start_new_session=True)
        if not wait_http(f"http://127.0.0.1:{UI_PORT}/server_info", dagster, 180):
            print("dagster dev did not start; see its output above", file=sys.stderr)
            return 1
        daemon_pid = dagster_daemon_pid(dagster)
        print(f"\n  Dagster UI:  http://127.0.0.1:{UI_PORT}   (sensors rtds_events, "
              f"rtds_compliance and rtds_marts are running)\n"
              f"  Warehouse:   make sql   (= {_shown(DUCKDB_CLI)} -readonly "
              f"{_shown(Path(load_settings(env).warehouse_path))})\n"
              f"               or: {_shown(Path(sys.executable).with_name('rtds-pipeline'))} sql "
              f"\"select count(*) from events\"\n"
              f"  Ctrl-C stops everything.\n", flush=True)
        return dagster.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        ended = stop_dagster(dagster, daemon_pid, dagster_home) if dagster is not None else 0
        for proc in reversed(procs):
            _stop(proc)
        print(f"stopped: Dagster ({ended} unfinished run(s) canceled; what they had not committed "
              f"is read again on the next start), the test server"
              f"{' and the webhook receiver' if len(procs) > 1 else ''}. State is in "
              f"{_shown(ROOT / 'data')} and {_shown(dagster_home)}; `make run` goes on from it.",
              flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
