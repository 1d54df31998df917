"""`make run`: the test server (live, with a backlog) and the pipeline reading it, together.

Stops both with Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx

PORT = int(os.environ.get("RTDS_TESTSERVER_PORT", "8717"))


def main() -> int:
    env = {**os.environ, "RTDS_BASE_URL": f"http://127.0.0.1:{PORT}"}
    server = subprocess.Popen([sys.executable, "-m", "rtds_pipeline.cli", "testserver",
                               "--port", str(PORT), "--rate", "200", "--backlog", "20000"])
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{PORT}/admin/stats", timeout=1)
                break
            except httpx.TransportError:
                if server.poll() is not None:
                    return server.returncode or 1
                time.sleep(0.3)
        print("reading the stream into data/lake (Ctrl-C to stop)…", flush=True)
        return subprocess.call([sys.executable, "-m", "rtds_pipeline.cli", "ingest", "--follow",
                                "--max-seconds", "10"], env=env)
    except KeyboardInterrupt:
        return 0
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    raise SystemExit(main())
