"""The webhook receiver (`rtds-pipeline webhook`) as a real process, fed over real HTTP(S) by the
test server acting as Airship's webhook sender; what landed is read back from the committed
landing Parquet with DuckDB and reconciled with the sender's acknowledged ground truth."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import ipaddress
import math
import os
import random
import select
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import warnings
from collections import Counter
from pathlib import Path

import duckdb
import httpx
import orjson
import pyarrow.parquet as pq
import pytest

from rtds_pipeline.extract.webhook.commit import split_body
from rtds_pipeline.extract.webhook.config import SettingsError as ConfigError
from rtds_pipeline.extract.webhook.config import load_webhook_config, parse_headers
from rtds_pipeline.lake.commits import CommitLog
from rtds_pipeline.lake.live import live_files
from rtds_pipeline.lake.storage import Lake, open_lake
from rtds_pipeline.run import wait_http
from rtds_pipeline.settings import SettingsError, SourceConfig, load_settings
from rtds_pipeline.testserver.app import ServerOptions, TestServer
from rtds_pipeline.testserver.log import Quirks
from rtds_pipeline.testserver.webhook_sender import AIRSHIP_BATCH_SIZES, WebhookOptions

SOURCE = "hook"
BASIC = ("airship", "s3cret-pass")
HEADER = ("X-Webhook-Token", "tok-9f8e7d")
JSON = {"Content-Type": "application/json; charset=UTF-8"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition, what: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


class Receiver:
    """`rtds-pipeline webhook` in its own process, on a fixed port across restarts."""

    def __init__(self, tmp_path: Path, lake_url: str | None = None, env: dict[str, str] | None = None,
                 args: tuple[str, ...] = (), scheme: str = "http", auth: bool = True) -> None:
        self.port = free_port()
        self.lake_url = lake_url or str(tmp_path / "lake")
        self.url = f"{scheme}://127.0.0.1:{self.port}/webhook"
        self.log_path = tmp_path / f"receiver-{self.port}.log"
        self.env = {**os.environ, "RTDS_LAKE_URL": self.lake_url, "RTDS_WEBHOOK_SOURCE": SOURCE,
                    # short windows: tests do not wait for the production defaults
                    "RTDS_WEBHOOK_COMMIT_QUIET": "0.02", "RTDS_WEBHOOK_COMMIT_SECONDS": "0.5",
                    **(env or {})}
        for k in ("RTDS_SOURCES_FILE", "RTDS_WEBHOOK_BASIC", "RTDS_WEBHOOK_HEADERS"):
            if k not in (env or {}):
                self.env.pop(k, None)
        if auth:
            self.env.setdefault("RTDS_WEBHOOK_BASIC", ":".join(BASIC))
            self.env.setdefault("RTDS_WEBHOOK_HEADERS", f"{HEADER[0]}: {HEADER[1]}")
        self.args = args
        self.ca = None
        self.proc: subprocess.Popen | None = None

    def start(self) -> Receiver:
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "rtds_pipeline.cli", "webhook", "--port", str(self.port),
                 *self.args], env=self.env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
        health = self.url.rsplit("/", 1)[0] + "/healthz"
        if not self._wait_ready(health):
            raise AssertionError(f"the receiver did not start:\n{self.output()}")
        return self

    def _wait_ready(self, health: str) -> bool:
        if health.startswith("https"):
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    httpx.get(health, verify=self.ca, timeout=1)
                    return True
                except httpx.TransportError:
                    time.sleep(0.2)
            return False
        return wait_http(health, self.proc, 120)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def lake(self) -> Lake:
        return open_lake(self.lake_url)


@pytest.fixture
def receivers(tmp_path):
    started: list[Receiver] = []

    def make(**kw) -> Receiver:
        r = Receiver(tmp_path, **kw)
        started.append(r)
        return r.start()

    yield make
    for r in started:
        r.stop()


def authed(**extra: str) -> dict[str, str]:
    token = base64.b64encode(":".join(BASIC).encode()).decode()
    return {**JSON, "Authorization": f"Basic {token}", HEADER[0]: HEADER[1], **extra}


def sender_options(url: str, **kw) -> WebhookOptions:
    return WebhookOptions(url=url, basic=BASIC, headers=(HEADER,), backoff_seconds=0.05,
                          backoff_max_seconds=0.5, linger_seconds=0.2, **kw)


def sending_server(options: WebhookOptions, backlog: int, seed: int = 7,
                   quirks: Quirks | None = None) -> TestServer:
    return TestServer(ServerOptions(port=0, backlog=backlog, seed=seed,
                                    quirks=quirks or Quirks())).send_webhooks(options).start()


def sender_state(server: TestServer, attr: str):
    return server.call(lambda: getattr(server.webhook, attr))


def landed_rows(lake: Lake, key: str = SOURCE) -> list[dict]:
    """Every row of the committed landing files (a file no commit lists does not exist)."""
    files = [lake.url_of(f.path) for f in live_files(lake, key)]
    if not files:
        return []
    rel = duckdb.sql(f"SELECT rtds_offset, id, type, raw, window_seq, window_pos "
                     f"FROM read_parquet({files!r})")
    return [dict(zip(rel.columns, row, strict=True)) for row in rel.fetchall()]


def dead_letters(lake: Lake, key: str = SOURCE) -> list[dict]:
    out = []
    for commit in CommitLog(lake, key).all():
        for f in commit.dead_letter_files:
            out += [orjson.loads(line) for line in lake.fs.cat_file(lake.path(f.path)).splitlines()]
    return out


def reconcile(server: TestServer, lake: Lake, sent) -> tuple[list[dict], Counter]:
    """Every event the sender had acknowledged is in a committed window, as sent; nothing else
    landed. Returns the rows and how often each offset landed (a redelivery lands again)."""
    truth = [r for r in server.ground_truth() if sent(r["type"])]
    assert truth, "the test sent nothing"
    assert all(r["acked"] for r in truth), "the sender has unacknowledged events"
    rows = landed_rows(lake)
    copies = Counter(r["rtds_offset"] for r in rows)
    assert set(copies) == {r["offset"] for r in truth}, "events lost or invented"
    by_offset = {r["offset"]: r["event"] for r in truth}
    for row in rows:
        assert orjson.loads(row["raw"]) == by_offset[row["rtds_offset"]]
        assert row["id"] == by_offset[row["rtds_offset"]]["id"]
    return rows, copies


# ---------------------------------------------------------------------------------------------
# The test server as Airship's sender, over real HTTP

@pytest.mark.slow
@pytest.mark.parametrize(("batch", "types"), [
    (1, None), (5, None), (10, None), (15, ("OPEN", "SEND", "CUSTOM")), (20, None),
    (30, ("CUSTOM",)), (50, None), (100, ("FIRST_OPEN", "OPEN", "CLOSE", "UNINSTALL")),
])
def test_sender_batches_land_every_acknowledged_event(receivers, batch, types):
    receiver = receivers()
    selected = frozenset(types) if types else None
    server = sending_server(sender_options(receiver.url, batch=batch, types=selected,
                                           concurrency=16), backlog=120 * min(batch, 10))
    try:
        wait_until(lambda: sender_state(server, "caught_up"), "the sender to catch up")
        opts = server.webhook.options
        rows, copies = reconcile(server, receiver.lake(), opts.admits)
        assert max(copies.values()) == 1, "no retry happened, so nothing landed twice"
        sent = sum(1 for r in server.ground_truth() if opts.admits(r["type"]))
        assert sender_state(server, "batches_acked") == math.ceil(sent / batch)
        if types:
            assert {r["type"] for r in rows} <= set(types)
        # the test server's quirks came through: copies of an id, as sent
        assert dead_letters(receiver.lake()) == []
    finally:
        server.stop()
    assert f"{BASIC[1]}" not in receiver.output() and HEADER[1] not in receiver.output()


def test_concurrent_requests_share_windows_and_each_ack_follows_its_commit(receivers):
    receiver = receivers(env={"RTDS_WEBHOOK_COMMIT_QUIET": "0.2", "RTDS_WEBHOOK_COMMIT_SECONDS": "1"})
    lake = receiver.lake()
    log = CommitLog(lake, SOURCE)
    results: list[tuple[dict, bool]] = []
    lock = threading.Lock()

    def post(i: int) -> None:
        event = _event(f"c{i}", 1000 + i)
        with httpx.Client(timeout=60) as client:
            r = client.post(receiver.url, content=orjson.dumps([event]), headers=authed())
        body = r.json()
        # the window named in the 2xx is already committed when the answer arrives
        committed = r.status_code == 200 and body["window"] in log.sequences()
        with lock:
            results.append((body, committed))

    threads = [threading.Thread(target=post, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 40 and all(committed for _, committed in results)
    windows = {body["window"] for body, _ in results}
    assert len(windows) < 40, "concurrent requests should share windows"
    assert {r["id"] for r in landed_rows(lake)} == {f"c{i}" for i in range(40)}
    commit = log.read(min(windows))
    assert commit.events >= 1 and commit.stop_reason.startswith("webhook:")
    assert commit.files[0].path.startswith(f"landing/source={SOURCE}/occurred_date=2026-11-30/w")


def test_a_compaction_record_taking_the_next_number_does_not_stop_the_receiver(receivers):
    """The housekeeping job compacts landing days beside the receiver: its record may take the
    number the receiver's next window wanted; that window commits at the next free one."""
    import dataclasses

    from rtds_pipeline.lake.commits import COMPACTION

    receiver = receivers()
    lake = receiver.lake()
    log = CommitLog(lake, SOURCE)
    with httpx.Client(timeout=60) as client:
        first = client.post(receiver.url, content=orjson.dumps([_event("k1", 1)]), headers=authed())
        assert first.status_code == 200
        last = log.latest()
        log.write(dataclasses.replace(last, window_seq=last.window_seq + 1, kind=COMPACTION,
                                      files=[], dead_letter_files=[], replaces=[], events=0))
        second = client.post(receiver.url, content=orjson.dumps([_event("k2", 2)]),
                             headers=authed())
    assert second.status_code == 200 and receiver.proc.poll() is None
    assert second.json()["window"] == last.window_seq + 2
    assert {r["id"] for r in landed_rows(lake)} == {"k1", "k2"}


# ---------------------------------------------------------------------------------------------
# Authentication

def test_auth_rejects_anything_but_the_configured_credentials(receivers):
    receiver = receivers()
    lake = receiver.lake()
    body = orjson.dumps([_event("a1", 1)])
    wrong_basic = base64.b64encode(b"airship:guess").decode()
    cases = {
        "no credentials": JSON,
        "wrong password": {**authed(), "Authorization": f"Basic {wrong_basic}"},
        "no custom header": {k: v for k, v in authed().items() if k != HEADER[0]},
        "wrong header value": authed(**{HEADER[0]: "tok-9f8e7e"}),
        "bearer instead of basic": {**authed(), "Authorization": "Bearer " + BASIC[1]},
        "malformed basic": {**authed(), "Authorization": "Basic %%%"},
    }
    with httpx.Client(timeout=30) as client:
        for what, headers in cases.items():
            r = client.post(receiver.url + "?token=query-secret", content=body, headers=headers)
            assert r.status_code == 401, what
            assert r.json() == {"ok": False, "error": "authentication required"}, what
            assert r.headers["www-authenticate"].startswith("Basic "), what
        assert CommitLog(lake, SOURCE).latest() is None, "a rejected request landed something"
        ok = client.post(receiver.url + "?token=query-secret", content=body, headers=authed())
    assert ok.status_code == 200 and ok.json()["landed"] == 1
    out = receiver.output()
    assert out.count("rejected") == len(cases)
    for secret in (BASIC[1], HEADER[1], "query-secret", wrong_basic, "tok-9f8e7e"):
        assert secret not in out, "a secret reached the log"


def test_an_open_receiver_must_stay_on_loopback(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTDS_")}
    env.update(RTDS_LAKE_URL=str(tmp_path / "lake"), RTDS_WEBHOOK_SOURCE=SOURCE)
    out = subprocess.run([sys.executable, "-m", "rtds_pipeline.cli", "webhook", "--host", "0.0.0.0",
                          "--port", str(free_port())], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2 and "RTDS_WEBHOOK_BASIC" in out.stderr


# ---------------------------------------------------------------------------------------------
# Bad requests

def test_bad_requests_are_answered_and_kept(receivers):
    receiver = receivers(env={"RTDS_WEBHOOK_MAX_BODY": "4096"})
    lake = receiver.lake()
    with httpx.Client(timeout=30) as client:
        # not JSON: 400 with a JSON body, and the body kept whole as a dead letter
        r = client.post(receiver.url, content=b'[{"id": "x1", oops', headers=authed())
        assert r.status_code == 400 and r.json()["ok"] is False and "not JSON" in r.json()["error"]
        assert r.json()["kept_as_dead_letter"].startswith(f"dead_letter/source={SOURCE}/window-")
        # JSON, but not an event batch
        r = client.post(receiver.url, content=b'"hello"', headers=authed())
        assert r.status_code == 400 and "JSON string" in r.json()["error"]
        # elements that are not events go to dead letters; the others land
        mixed = [_event("m1", 11), 7, None, ["x"], {"type": "OPEN", "offset": "1000000000012"},
                 _event("m2", 13)]
        r = client.post(receiver.url, content=orjson.dumps(mixed), headers=authed())
        assert r.status_code == 200
        assert r.json() | {"window": 0} == {"ok": True, "received": 6, "landed": 2,
                                            "dead_letters": 4, "window": 0}
        # a single object, as Airship sends for batch size 1
        r = client.post(receiver.url, content=orjson.dumps(_event("s1", 14)), headers=authed())
        assert r.status_code == 200 and r.json()["landed"] == 1
        # too large: declared, or sent without a length
        big = orjson.dumps([_event(f"b{i}", 100 + i) for i in range(40)])
        assert len(big) > 4096
        r = client.post(receiver.url, content=big, headers=authed())
        assert r.status_code == 413 and r.json()["ok"] is False
        r = client.post(receiver.url, content=iter([big[:3000], big[3000:]]), headers=authed())
        assert r.status_code == 413
        # wrong content type or encoding
        for ctype in ("text/plain", "application/x-www-form-urlencoded",
                      "application/json; charset=latin-1"):
            r = client.post(receiver.url, content=b"[]", headers=authed(**{"Content-Type": ctype}))
            assert r.status_code == 415, ctype
        r = client.post(receiver.url, content=b"[]", headers=authed(**{"Content-Encoding": "gzip"}))
        assert r.status_code == 415
        # other methods
        for method in ("GET", "PUT", "DELETE", "PATCH"):
            r = client.request(method, receiver.url, headers=authed())
            assert r.status_code == 405 and r.headers["allow"] == "POST", method
        assert client.post(receiver.url.replace("/webhook", "/elsewhere"), content=b"[]",
                           headers=authed()).status_code == 404
    rows = {r["id"]: r for r in landed_rows(lake)}
    assert sorted(rows) == ["m1", "m2", "s1"]
    # positions count every element of the window in arrival order, dead or landed
    assert (rows["m1"]["window_pos"], rows["m2"]["window_pos"]) == (0, 5)
    dead = dead_letters(lake)
    assert [d["raw"] for d in dead] == ['[{"id": "x1", oops', '"hello"', "7", "null", '["x"]',
                                        '{"type":"OPEN","offset":"1000000000012"}']
    assert [d["position"] for d in dead[2:]] == [1, 2, 3, 4]
    assert all(d["error"] for d in dead)


def test_slow_heads_and_bodies_are_cut(receivers):
    receiver = receivers(env={"RTDS_WEBHOOK_HEAD_TIMEOUT": "0.5", "RTDS_WEBHOOK_BODY_TIMEOUT": "0.5"})
    token = base64.b64encode(":".join(BASIC).encode())
    head = (b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Basic " + token + b"\r\n" + f"{HEADER[0]}: {HEADER[1]}".encode())
    # a head that never ends: the connection is closed
    with socket.create_connection(("127.0.0.1", receiver.port), timeout=60) as s:
        s.sendall(head[:40])
        assert _read_all(s) == b""
    # a connection that says nothing
    with socket.create_connection(("127.0.0.1", receiver.port), timeout=60) as s:
        assert _read_all(s) == b""
    # a body that stops short: 408
    with socket.create_connection(("127.0.0.1", receiver.port), timeout=60) as s:
        s.sendall(head + b"\r\nContent-Length: 1000\r\n\r\n[{\"id\":")
        answer = _read_all(s)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
    # an endless chunked body: cut at the size limit (413) or by the deadline (408)
    with socket.create_connection(("127.0.0.1", receiver.port), timeout=60) as s:
        s.sendall(head + b"\r\nTransfer-Encoding: chunked\r\n\r\n")
        answer = _send_until_answered(s, b"4000\r\n" + b" " * 0x4000 + b"\r\n")
        assert answer.split(b" ", 2)[1] in (b"408", b"413"), answer[:100]
    assert CommitLog(receiver.lake(), SOURCE).latest() is None


# ---------------------------------------------------------------------------------------------
# Durability

@pytest.mark.slow
def test_kill_9_at_random_points_loses_nothing(receivers):
    """SIGKILL the receiver again and again while the sender POSTs; the sender retries what was
    not acknowledged. Every acknowledged event is in a committed window. Half the kills come at
    a random moment, half the instant a new commit record appears: then the window is committed
    but its answers are (mostly) not sent, and the sender's redelivery lands it again."""
    receiver = receivers(env={"RTDS_WEBHOOK_COMMIT_QUIET": "0.05"})
    server = sending_server(sender_options(receiver.url, batch=20, concurrency=8), backlog=12_000)
    rng = random.Random(17)
    kills = 0
    try:
        lake = receiver.lake()
        log = CommitLog(lake, SOURCE)
        records = Path(lake.path("_commits", f"source={SOURCE}"))
        for i in range(8):
            acked = sender_state(server, "batches_acked")
            goal = acked + rng.randrange(1, 30)
            wait_until(lambda g=goal: sender_state(server, "batches_acked") >= g
                       or sender_state(server, "caught_up"), "acknowledgements")
            if sender_state(server, "caught_up"):
                break
            if i % 2:
                time.sleep(rng.uniform(0, 0.15))  # the fault's timing, drawn at random
            else:
                seen, deadline = _records(records), time.monotonic() + 120
                while _records(records) == seen:  # no sleep: the kill must follow the commit
                    assert receiver.proc.poll() is None and time.monotonic() < deadline
            receiver.kill()
            kills += 1
            receiver.start()
        wait_until(lambda: sender_state(server, "caught_up"), "the sender to catch up")
        rows, copies = reconcile(server, lake, server.webhook.options.admits)
        assert kills >= 4
        responses = sender_state(server, "responses")
        assert sum(v for k, v in responses.items() if k != "200") > 0, "no request failed"
        assert log.latest().window_seq == len(log.sequences()), "gaps in the commit log"
        # every window's files are whole and listed once
        listed = [f.path for c in log.all() for f in c.files]
        assert len(listed) == len(set(listed))
        assert sum(copies.values()) == len(rows)
    finally:
        server.stop()


def _records(folder: Path) -> int:
    try:
        return sum(1 for name in os.listdir(folder) if name.endswith(".json"))
    except FileNotFoundError:
        return 0


def test_a_failed_commit_is_answered_503_and_the_next_one_lands(receivers):
    receiver = receivers()
    lake = receiver.lake()
    blocker = Path(lake.path("landing", f"source={SOURCE}"))
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_bytes(b"not a folder")  # writing landing files fails, as a full disk would
    with httpx.Client(timeout=30) as client:
        r = client.post(receiver.url, content=orjson.dumps([_event("f1", 1)]), headers=authed())
        assert r.status_code == 503 and r.json()["ok"] is False
        assert CommitLog(lake, SOURCE).latest() is None
        blocker.unlink()
        r = client.post(receiver.url, content=orjson.dumps([_event("f1", 1)]), headers=authed())
        assert r.status_code == 200 and r.json()["window"] == 1
    assert [r["id"] for r in landed_rows(lake)] == ["f1"]


def test_a_second_receiver_for_the_same_source_stops(receivers, tmp_path):
    first = receivers()
    second = receivers(lake_url=first.lake_url)
    with httpx.Client(timeout=30) as client:
        assert client.post(first.url, content=orjson.dumps([_event("o1", 1)]),
                           headers=authed()).status_code == 200
        r = client.post(second.url, content=orjson.dumps([_event("o2", 2)]), headers=authed())
    assert r.status_code == 503
    assert second.proc.wait(60) == 1
    assert "another" in second.output()
    assert [r["id"] for r in landed_rows(first.lake())] == ["o1"]


# ---------------------------------------------------------------------------------------------
# HTTPS and object storage

def _self_signed(tmp_path: Path) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def _tls_version_against_a_permissive_server(client: ssl.SSLContext, cert: str, key: str) -> str:
    """The control: what `client` negotiates with a server that allows TLS 1.0 and up."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    with warnings.catch_warnings():  # TLS 1.0 on purpose: Python warns it is deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        server.minimum_version = ssl.TLSVersion.TLSv1
    server.set_ciphers("ALL:@SECLEVEL=0")
    with socket.create_server(("127.0.0.1", 0)) as listener:
        def accept() -> None:
            conn, _ = listener.accept()
            with contextlib.suppress(ssl.SSLError, OSError), server.wrap_socket(conn, server_side=True):
                pass
        t = threading.Thread(target=accept, daemon=True)
        t.start()
        with socket.create_connection(listener.getsockname(), timeout=30) as raw:
            with client.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                version = tls.version()
        t.join(30)
    return version


@pytest.mark.slow
def test_https_with_a_self_signed_certificate(tmp_path):
    cert, key = _self_signed(tmp_path)
    receiver = Receiver(tmp_path, scheme="https", args=("--tls-cert", cert, "--tls-key", key))
    receiver.ca = ssl.create_default_context(cafile=cert)
    receiver.start()
    try:
        # TLS below 1.2 is refused (the same client does speak TLS 1.1: see the control); 1.2
        # and 1.3 are served
        old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        old.load_verify_locations(cert)
        with warnings.catch_warnings():  # TLS 1.0/1.1 on purpose, to be refused
            warnings.simplefilter("ignore", DeprecationWarning)
            old.maximum_version = ssl.TLSVersion.TLSv1_1
            old.minimum_version = ssl.TLSVersion.TLSv1
        old.set_ciphers("ALL:@SECLEVEL=0")
        assert _tls_version_against_a_permissive_server(old, cert, key) == "TLSv1.1"
        with pytest.raises(ssl.SSLError):
            with socket.create_connection(("127.0.0.1", receiver.port), timeout=30) as raw:
                old.wrap_socket(raw, server_hostname="127.0.0.1")
        for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            ctx = ssl.create_default_context(cafile=cert)
            ctx.minimum_version = ctx.maximum_version = version
            with socket.create_connection(("127.0.0.1", receiver.port), timeout=30) as raw:
                with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                    assert tls.version() == {ssl.TLSVersion.TLSv1_2: "TLSv1.2",
                                             ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]
        # plain HTTP on the TLS port gets nowhere
        with pytest.raises(httpx.HTTPError):
            httpx.post(receiver.url.replace("https", "http"), content=b"[]", headers=authed(),
                       timeout=10)
        server = sending_server(sender_options(receiver.url, batch=50, ca_file=cert), backlog=1500)
        try:
            wait_until(lambda: sender_state(server, "caught_up"), "the sender to catch up")
            reconcile(server, receiver.lake(), server.webhook.options.admits)
        finally:
            server.stop()
    finally:
        receiver.stop()


def test_an_s3_lake_receives_the_same_layout(s3_server, tmp_path):
    env = {"RTDS_S3_ENDPOINT_URL": s3_server["endpoint_url"], "AWS_ACCESS_KEY_ID": s3_server["key"],
           "AWS_SECRET_ACCESS_KEY": s3_server["secret"], "AWS_REGION": "us-east-1"}
    url = f"s3://lake/webhook-{time.time_ns()}"
    receiver = Receiver(tmp_path, lake_url=url, env=env).start()
    try:
        events = [_event(f"s3-{i}", i) for i in range(25)] + ["junk"]
        r = httpx.post(receiver.url, content=orjson.dumps(events), headers=authed(), timeout=60)
        assert r.status_code == 200 and r.json()["landed"] == 25 and r.json()["dead_letters"] == 1
        lake = open_lake(url, {"key": s3_server["key"], "secret": s3_server["secret"],
                               "endpoint_url": s3_server["endpoint_url"]})
        commit = CommitLog(lake, SOURCE).latest()
        assert commit.window_seq == 1 and commit.events == 25 and commit.dead_letters == 1
        assert all(f.path.startswith(f"landing/source={SOURCE}/occurred_date=")
                   for f in commit.files)
        ids = []
        for f in commit.files:
            with lake.fs.open(lake.path(f.path), "rb") as fh:
                ids += pq.read_table(fh, columns=["id"]).column("id").to_pylist()
        assert sorted(ids) == sorted(e["id"] for e in events[:25])
        dead = lake.fs.cat_file(lake.path(commit.dead_letter_files[0].path))
        assert orjson.loads(dead)["raw"] == '"junk"'
    finally:
        receiver.stop()


# ---------------------------------------------------------------------------------------------
# Settings and the body split

def test_webhook_sources_in_settings(tmp_path):
    toml = tmp_path / "sources.toml"
    toml.write_text('[[sources]]\nname = "stream"\n\n[[sources]]\nname = "hook"\nkind = "webhook"\n'
                    '\n[[sources]]\nname = "consent"\nkind = "compliance"\n')
    settings = load_settings({"RTDS_SOURCES_FILE": str(toml)})
    assert [(s.key, s.kind, s.feeds) for s in settings.sources] == [
        ("stream", "events", "events"), ("hook", "webhook", "events"),
        ("consent", "compliance", "compliance")]
    with pytest.raises(SettingsError, match="no stream to read"):
        settings.source("hook").endpoint()
    toml.write_text('[[sources]]\nname = "hook"\nkind = "webhook"\nbase_url = "http://x"\n')
    with pytest.raises(SettingsError, match="remove base_url"):
        load_settings({"RTDS_SOURCES_FILE": str(toml)})
    default = load_settings({"RTDS_WEBHOOK_SOURCE": "hook"})
    assert [s.kind for s in default.sources] == ["events", "compliance", "webhook"]
    assert SourceConfig("x", kind="webhook").feeds == "events"


def test_webhook_config_from_the_environment():
    config = load_webhook_config({"RTDS_WEBHOOK_BASIC": "u:p:with:colons",
                                  "RTDS_WEBHOOK_HEADERS": "X-A: 1; X-B: two words;",
                                  "RTDS_WEBHOOK_COMMIT_EVENTS": "500"})
    assert config.basic == ("u", "p:with:colons")
    assert config.headers == (("X-A", "1"), ("X-B", "two words"))
    assert config.commit.max_events == 500
    assert "p:with:colons" not in repr(config) and "two words" not in repr(config)
    for bad in ("X-A", "X-A: 1; x-a: 2", "Authorization: Basic x", ": v"):
        with pytest.raises(ConfigError):
            parse_headers(bad)
    with pytest.raises(ConfigError):
        load_webhook_config({"RTDS_WEBHOOK_BASIC": "nopassword"})
    with pytest.raises(ConfigError):
        load_webhook_config({"RTDS_WEBHOOK_MAX_BODY": "-1"})


def test_split_body_keeps_each_event_as_one_line():
    event = {"id": "u1", "type": "CUSTOM", "body": {"name": "a\nb\u2028c", "value": 1.5}}
    split = split_body(orjson.dumps([event, 3, event]))
    assert split.error is None and split.events == 3
    assert split.lines[0] == split.lines[2] and b"\n" not in split.lines[0]
    assert orjson.loads(split.lines[0]) == event and split.lines[1] is None
    assert [(i, raw) for i, _, raw in split.dead] == [(1, b"3")]
    assert split_body(b"{}").lines == [b"{}"]
    assert split_body(b"[]").events == 0
    assert "not JSON" in split_body(b"").error
    assert "JSON number" in split_body(b"12").error


def test_sender_refuses_batch_sizes_airship_does_not_offer():
    for size in AIRSHIP_BATCH_SIZES:
        WebhookOptions(url="http://127.0.0.1:1/", batch=size)
    with pytest.raises(ValueError):
        WebhookOptions(url="http://127.0.0.1:1/", batch=7)


# ---------------------------------------------------------------------------------------------

def _event(id_: str, offset: int) -> dict:
    return {"id": id_, "type": "OPEN", "offset": f"{1_000_000_000_000 + offset}",
            "occurred": "2026-11-30T12:00:00.000Z", "processed": "2026-11-30T12:00:01.000Z",
            "device": {"channel": "c-1", "device_type": "ANDROID"}, "body": {}}


def _read_all(s: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    parts = []
    while data := s.recv(65536):
        parts.append(data)
    return b"".join(parts)


def _send_until_answered(s: socket.socket, chunk: bytes) -> bytes:
    """Send `chunk` again and again (whole chunks: a partial send is completed) until the server
    answers, then read the answer."""
    s.setblocking(False)
    answer = b""
    pending = memoryview(b"")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not answer:
        try:
            answer += s.recv(65536)
        except BlockingIOError:
            pass
        if not pending:
            pending = memoryview(chunk)
        try:
            pending = pending[s.send(pending):]
        except BlockingIOError:
            select.select([s], [s], [], 0.05)
        except (BrokenPipeError, ConnectionResetError):
            break
    s.setblocking(True)
    s.settimeout(10)
    try:
        answer += _read_all(s)
    except (TimeoutError, ConnectionResetError):
        pass
    return answer
