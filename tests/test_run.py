"""`make run` (rtds_pipeline/run.py) refuses to start on a port already taken: it would otherwise
take another test server's answers for its own and read that server's stream."""

from __future__ import annotations

import os
import socket
import subprocess
import sys


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
