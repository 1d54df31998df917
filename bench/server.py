"""The test server a benchmark reads: a backlog of N events, a 50 ms keep-alive so that the
wait for the first keep-alive after the backlog ("caught up") stays out of the measurement."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

from bench.scratch import scratch_dir
from rtds_pipeline.run import wait_http


@contextlib.contextmanager
def backlog_server(port: int, events: int) -> Iterator[str]:
    """Start the server with a backlog of `events` (seed 1) and yield its URL."""
    url = f"http://127.0.0.1:{port}"
    t0 = time.perf_counter()
    config = os.path.join(scratch_dir("bench-config-"), "server.json")
    with open(config, "w") as f:
        json.dump({"keepalive_seconds": 0.05}, f)
    server = subprocess.Popen([sys.executable, "-m", "rtds_pipeline.cli", "testserver", "--port",
                               str(port), "--backlog", str(events), "--seed", "1",
                               "--config", config], stdout=subprocess.DEVNULL)
    try:
        if not wait_http(url + "/admin/stats", server, 900):  # a first 2M backlog: ~2 min
            raise RuntimeError(f"the test server did not answer (exit code {server.poll()}); "
                               f"is port {port} free?")
        print(f"backlog of {events:,} events ready in {time.perf_counter() - t0:.1f} s "
              f"(cached per seed after the first build)", flush=True)
        yield url
    finally:
        server.terminate()
        server.wait(10)
