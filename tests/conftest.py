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
