"""The test server over real HTTP on loopback: statuses, filters, offsets, pinning, quirks, faults."""

from __future__ import annotations

import subprocess
import threading
import time
from collections import Counter

import httpx
import pytest
from rtds_http import basic, headers, post, raw_lines, read

from rtds_pipeline.testserver.config import Fault
from rtds_pipeline.testserver.log import UNKNOWN_TYPE, StreamLog
from rtds_pipeline.testserver.matching import compile_filters, version_matches

EARLIEST = {"start": "EARLIEST"}


# ------------------------------------------------------------------ statuses
def test_earliest_streams_the_backlog_in_offset_order(server):
    events = read(server.url, EARLIEST, n=3000)
    offsets = [e["offset"] for e in events]
    assert len(offsets) == 3000
    assert all(len(o) == 13 and o.isdigit() for o in offsets)
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)


def test_trailing_slash_and_compliance_paths_are_accepted(server):
    assert read(server.url, EARLIEST, n=5, path="/api/events/")
    comp = read(server.url, EARLIEST, n=20, path="/api/events/general",
                hdrs=headers() | {"Authorization": basic("test-app-key", "test-master-secret")})
    assert comp and {e["type"] for e in comp} == {"COMPLIANCE"}


@pytest.mark.parametrize(("body", "fragment"), [
    ({"start": "EARLIEST", "resume_offset": "1000000000001"}, "only one of"),
    ({"start": "SOMETIME"}, "EARLIEST or LATEST"),
    ({"filters": []}, "empty array"),
    ({"filters": [{"types": []}]}, "empty array"),
    ({"filters": [{"colour": ["red"]}]}, "unexpected attribute"),
    ({"filters": [{"types": ["NOT_A_TYPE"]}]}, "unknown event type"),
    ({"filters": [{"device_types": ["IOS"]}]}, "lower case"),
    ({"filters": [{"latency": -1}]}, "non-negative"),
    ({"filters": [{"predicates": [{"key": "type", "value": {"resembles": "OPEN"}}]}]}, "unknown matcher"),
    ({"subset": {"type": "PARTITION", "count": 4, "selection": 4}}, "0..3"),
    ({"subset": {"type": "SAMPLE", "proportion": 1.5}}, "0 to 1"),
    ({"subset": {"type": "SAMPLE", "proportion": 0.5, "count": 2}}, "only 'proportion'"),
    ({"resume_offset": 17}, "string"),
    ({"resume_offset": "abc"}, "not an offset"),
    ({"bogus": 1}, "unexpected attribute"),
    (b"{not json", "not valid JSON"),
])
def test_invalid_requests_get_400_naming_the_problem(server, body, fragment):
    r = post(server.url, body)
    assert r.status_code == 400
    assert fragment in r.json()["error"]


def test_compliance_filters_are_restricted(server):
    h = headers() | {"Authorization": basic("test-app-key", "test-master-secret")}
    r = post(server.url, {"filters": [{"types": ["COMPLIANCE"]}]}, path="/api/events/general", headers=h)
    assert r.status_code == 400 and "types" in r.json()["error"]
    r = post(server.url, {"filters": [{"device_types": ["ios"]}]}, path="/api/events/general", headers=h)
    assert r.status_code == 400


@pytest.mark.parametrize(("hdrs", "fragment"), [
    (headers(token="wrong"), "invalid access token"),
    (headers(app=None), "X-UA-Appkey"),
    ({k: v for k, v in headers().items() if k != "Authorization"}, "missing Authorization"),
    (headers() | {"Authorization": basic("test-app-key", "test-master-secret")}, "only on /api/events/general"),
])
def test_bad_credentials_get_401(server, hdrs, fragment):
    r = post(server.url, EARLIEST, headers=hdrs)
    assert r.status_code == 401 and fragment in r.json()["error"]


def test_compliance_endpoint_rejects_bearer_and_wrong_secret(server):
    assert post(server.url, EARLIEST, path="/api/events/general").status_code == 401
    h = headers() | {"Authorization": basic("test-app-key", "nope")}
    assert post(server.url, EARLIEST, path="/api/events/general", headers=h).status_code == 401


def test_wrong_accept_gets_406(server):
    r = post(server.url, EARLIEST, headers=headers() | {"Accept": "application/json"})
    assert r.status_code == 406 and "version=3" in r.json()["error"]


def test_chunked_request_body_gets_411(server):
    def body():
        yield b'{"start":"EARLIEST"}'
    with httpx.Client() as c:
        r = c.post(server.url + "/api/events", content=body(), headers=headers())
    assert r.status_code == 411


def test_not_entitled_types_get_403_listing_them(server):
    r = post(server.url, {"filters": [{"types": ["SEND", "TAG_CHANGE", "CUSTOM"]}]},
             headers=headers(token="push-only"))
    assert r.status_code == 403
    assert r.text == "Requested event types to which client is not entitled CUSTOM,TAG_CHANGE"


def test_restricted_token_receives_only_its_types(server):
    events = read(server.url, EARLIEST, n=200, hdrs=headers(token="push-only"))
    assert events and {e["type"] for e in events} <= {"SEND", "OPEN"}


def test_app_without_data_gets_404(server):
    r = post(server.url, EARLIEST, headers=headers(token="empty-token", app="empty-app"))
    assert r.status_code == 404 and "no data" in r.json()["error"]


def test_too_many_streams_get_402(fresh_server):
    server = fresh_server(max_streams=3)
    opened = []
    stop = threading.Event()

    def hold():
        with httpx.Client(timeout=30) as c, c.stream("POST", server.url + "/api/events",
                                                     json={"start": "LATEST"}, headers=headers()) as r:
            opened.append(r.status_code)
            for _ in r.iter_bytes():
                if stop.is_set():
                    return

    threads = [threading.Thread(target=hold) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 10
        while len(opened) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert opened == [200, 200, 200]
        r = post(server.url, {"start": "LATEST"})
        assert r.status_code == 402 and "simultaneous" in r.json()["error"]
    finally:
        stop.set()
        for t in threads:
            t.join(5)


def test_unknown_endpoint_is_404_and_get_is_405(server):
    with httpx.Client() as c:
        assert c.post(server.url + "/api/other", headers=headers()).status_code == 404
        assert c.get(server.url + "/api/events", headers=headers()).status_code == 405


# ------------------------------------------------------------------ offsets
def test_resume_offset_is_exclusive(server):
    first = read(server.url, EARLIEST, n=50)
    resumed = read(server.url, {"resume_offset": first[24]["offset"]}, n=25)
    assert [e["offset"] for e in resumed] == [e["offset"] for e in first[25:50]]


def test_latest_serves_only_new_events(fresh_server):
    srv = fresh_server(backlog=500)
    got = []
    t = threading.Thread(target=lambda: got.extend(read(srv.url, {"start": "LATEST"}, n=10, seconds=10)))
    t.start()
    # Live events until the reader has its ten: it may connect after the first batch (a loaded
    # machine), and LATEST then rightly skips that batch.
    deadline = time.monotonic() + 15
    while t.is_alive() and time.monotonic() < deadline:
        time.sleep(0.5)
        srv.generate(5)
    t.join(1)
    assert len(got) == 10
    assert int(got[0]["offset"]) >= int(srv.ground_truth()[499]["offset"])


def test_expired_offset_restarts_at_earliest_or_errors(fresh_server):
    srv = fresh_server(backlog=1000)
    srv.call(lambda: (setattr(srv.log(), "retention_events", 500), srv.log().enforce_retention(0)))
    oldest = srv.ground_truth()[0]["offset"]
    events = read(srv.url, {"resume_offset": "1000000000010"}, n=1)
    assert events[0]["offset"] == oldest
    srv.config.expired_offset = "error"
    r = post(srv.url, {"resume_offset": "1000000000010"})
    assert r.status_code == 400 and "retention window" in r.json()["error"]


def test_retention_by_bytes():
    log = StreamLog(seed=1, retention_bytes=200_000, retention_ms=10**14)
    log.generate(2_000, 0, 10_000_000_000_000)
    assert 0 < log.bytes_retained <= 200_000 and log.first_seq > 0


# ------------------------------------------------------------------ filters
def _all(server, body, n=20_000):
    return read(server.url, {"start": "EARLIEST", **body}, n=n, seconds=3)


def test_types_filter(server):
    events = _all(server, {"filters": [{"types": ["open", "CLOSE"]}]}, n=500)
    assert events and {e["type"] for e in events} == {"OPEN", "CLOSE"}


def test_filter_objects_are_or_and_keys_are_and(server):
    ios_opens = _all(server, {"filters": [{"types": ["OPEN"], "device_types": ["ios"]}]}, n=300)
    assert ios_opens and all(e["type"] == "OPEN" and e["device"]["device_type"] == "IOS" for e in ios_opens)
    either = _all(server, {"filters": [{"types": ["PUSH_BODY"]}, {"device_types": ["sms"]}]}, n=500)
    kinds = {("PB" if e["type"] == "PUSH_BODY" else e["device"]["device_type"]) for e in either}
    assert kinds == {"PB", "SMS"}


def test_devices_and_users_in_one_filter_must_both_match():
    admits = compile_filters(({"devices": [{"channel": "c1"}], "users": [{"contact_id": "k1"}]},))
    both = {"device": {"channel": "c1"}, "user": {"contact_id": "k1"}}
    assert admits("OPEN", both)
    assert not admits("OPEN", {**both, "device": {"channel": "c2"}})
    assert not admits("OPEN", {**both, "user": {"contact_id": "k2"}})


def test_compliance_only_when_asked_by_type(server):
    assert "COMPLIANCE" not in {e["type"] for e in _all(server, {}, n=5000)}
    asked = _all(server, {"filters": [{"types": ["COMPLIANCE"]}]}, n=50)
    assert asked and {e["type"] for e in asked} == {"COMPLIANCE"}


def test_notifications_filter_accepts_both_shapes(server):
    send = next(e for e in _all(server, {"filters": [{"types": ["SEND"]}]}, n=1))
    push_id = send["body"]["push_id"]
    for notif in ({"push_id": push_id}, [{"push_id": push_id}]):
        events = _all(server, {"filters": [{"notifications": notif}]}, n=2000)
        assert events and all(push_id in str(e["body"]) for e in events)
        assert {"SEND", "PUSH_BODY"} <= {e["type"] for e in events}


def test_devices_filter_accepts_both_key_families(server):
    ev = next(e for e in _all(server, {"filters": [{"device_types": ["android"]}]}, n=1))
    ch = ev["device"]["channel"]
    for sel in ({"channel": ch}, {"android_channel": ch}):
        events = _all(server, {"filters": [{"devices": [sel]}]})
        assert events and all(e["device"]["channel"] == ch for e in events)


def test_users_filter(server):
    ev = next(e for e in _all(server, {"filters": [{"types": ["OPEN"]}]}, n=50) if "user" in e)
    cid = ev["user"]["contact_id"]
    events = _all(server, {"filters": [{"users": [{"contact_id": cid}]}]})
    assert events and all(e["user"]["contact_id"] == cid for e in events)


def test_latency_filter_drops_old_occurred(fresh_server):
    srv = fresh_server(backlog=3000)
    events = read(srv.url, {"start": "EARLIEST", "filters": [{"latency": 3_600_000}]}, n=3000, seconds=3)
    from rtds_pipeline.protocol.timestamps import now_ms, parse_iso_ms
    assert events and all(now_ms() - parse_iso_ms(e["occurred"]) <= 3_600_000 + 10_000 for e in events)
    assert len(events) < 3000


@pytest.mark.parametrize(("pred", "check"), [
    ({"key": "type", "value": {"equals": "OPEN"}}, lambda e: e["type"] == "OPEN"),
    ({"scope": ["device"], "key": "device_type", "value": {"equals": "ANDROID"}},
     lambda e: e["device"]["device_type"] == "ANDROID"),
    ({"scope": "body", "key": "name", "value": {"equals": "purchase"}},
     lambda e: e["body"]["name"] == "purchase"),
    ({"and": [{"key": "type", "value": {"equals": "CUSTOM"}},
              {"scope": "body", "key": "value", "value": {"at_least": 100, "at_most": 150}}]},
     lambda e: 100 <= e["body"]["value"] <= 150),
    ({"or": [{"key": "type", "value": {"equals": "OPEN"}}, {"key": "type", "value": {"equals": "CLOSE"}}]},
     lambda e: e["type"] in ("OPEN", "CLOSE")),
    ({"not": {"key": "device", "value": {"is_present": True}}}, lambda e: "device" not in e),
    ({"scope": ["device", "attributes"], "key": "app_version", "value": {"version_matches": "[5.3,6.0)"}},
     lambda e: e["device"]["attributes"]["app_version"] in ("5.3.1", "5.4.0")),
    ({"scope": ["body", "campaigns"], "key": "categories",
      "value": {"array_contains": {"value": {"equals": "promo"}}}},
     lambda e: "promo" in e["body"]["campaigns"]["categories"]),
    ({"scope": ["body", "campaigns"], "key": "categories",
      "value": {"array_contains": {"value": {"equals": "promo"}}, "index": 0}},
     lambda e: e["body"]["campaigns"]["categories"][0] == "promo"),
])
def test_predicates(server, pred, check):
    events = _all(server, {"filters": [{"predicates": [pred]}]}, n=500)
    assert events, pred
    assert all(check(e) for e in events)


def test_ivy_version_matchers():
    assert version_matches("1.2.3", "1.2.3") and not version_matches("1.2.3", "1.2.4")
    assert version_matches("5.+", "5.4.0") and not version_matches("5.+", "6.0.0")
    assert version_matches("[1.0,2.0]", "2.0") and not version_matches("[1.0,2.0)", "2.0")
    assert version_matches("]1.0,)", "1.0.1") and not version_matches("]1.0,)", "1.0")
    assert version_matches("latest.integration", "0.1")


# ------------------------------------------------------------------ subsets
def test_partitions_are_disjoint_and_their_union_is_the_stream(server):
    everything = _all(server, {}, n=20_000)
    parts = [_all(server, {"subset": {"type": "PARTITION", "count": 3, "selection": i}})
             for i in range(3)]
    sets = [{e["offset"] for e in p} for p in parts]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert set.union(*sets) == {e["offset"] for e in everything}
    by_id = {}
    for i, p in enumerate(parts):
        for e in p:
            assert by_id.setdefault(e["id"], i) == i  # copies of an event share a partition


def test_sample_proportion_is_within_tolerance(server):
    everything = len(_all(server, {}, n=20_000))
    sampled = len(_all(server, {"subset": {"type": "SAMPLE", "proportion": 0.25}}))
    assert abs(sampled / everything - 0.25) < 0.03


# ------------------------------------------------------------------ pinning, keep-alives, revocation
def test_307_pins_the_session_with_a_cookie(fresh_server):
    srv = fresh_server(redirect="stale")
    r = post(srv.url, EARLIEST)
    assert r.status_code == 307
    cookie = r.headers["set-cookie"].split(";")[0]
    assert read(srv.url, EARLIEST, n=5, hdrs=headers(Cookie=cookie))
    srv.rotate_node()
    assert post(srv.url, EARLIEST, headers=headers(Cookie=cookie)).status_code == 307


def test_always_redirect_loops(fresh_server):
    srv = fresh_server(redirect="always", redirect_location=True)
    r = post(srv.url, EARLIEST, headers=headers(Cookie="SRVID=node-1"))
    assert r.status_code == 307 and r.headers["location"].endswith("/api/events")


def test_blank_line_keepalives_when_idle(server):
    ka = []
    read(server.url, {"start": "LATEST"}, seconds=1.5, keepalives=ka)
    assert len(ka) >= 2


def test_keepalives_reach_a_filtered_reader_while_other_events_flow(fresh_server):
    """A reader whose filter matches nothing still hears from the server every keep-alive
    interval while events it does not want keep arriving (a compliance reader's usual day)."""
    srv = fresh_server(backlog=100)
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            srv.generate(20)
            time.sleep(0.02)

    feeder = threading.Thread(target=traffic)
    feeder.start()
    try:
        ka: list[int] = []
        never = {"start": "LATEST", "filters": [
            {"predicates": [{"key": "type", "value": {"equals": "NO_SUCH_TYPE"}}]}]}
        assert read(srv.url, never, seconds=1.5, keepalives=ka) == []
    finally:
        stop.set()
        feeder.join()
    assert len(ka) >= 2  # CONFIG's keep-alive is 0.3 s


def test_offset_updates_replace_keepalives(server):
    events = read(server.url, {"start": "LATEST", "enable_offset_updates": True}, n=2, seconds=3)
    assert [e["type"] for e in events] == ["OFFSET_UPDATE"] * 2
    assert events[0]["offset"] == server.ground_truth()[-1]["offset"]
    assert "body" not in events[0] and "device" not in events[0]


def test_revoked_token_ends_its_streams_and_gets_401(fresh_server):
    srv = fresh_server(backlog=100)
    got: list = []
    t = threading.Thread(target=lambda: got.extend(
        read(srv.url, EARLIEST, seconds=20, hdrs=headers(token="revocable"))))
    t.start()
    time.sleep(1)
    srv.revoke("revocable")
    t.join(10)
    expected = sum(1 for r in srv.ground_truth() if r["type"] != "COMPLIANCE")
    assert not t.is_alive() and len(got) == expected  # stream ended well before its 20 s
    r = post(srv.url, EARLIEST, headers=headers(token="revocable"))
    assert r.status_code == 401 and "revoked" in r.json()["error"]


# ------------------------------------------------------------------ generator, quirks
def test_same_seed_same_stream():
    # Over a day: 3,000 events spread over 31 years would leave nothing in the 7-day retention.
    a, b = StreamLog(seed=11), StreamLog(seed=11)
    a.generate(3000, 0, 10**8)
    b.generate(3000, 0, 10**8)
    assert a.lines and a.lines == b.lines
    c = StreamLog(seed=12)
    c.generate(3000, 0, 10**8)
    assert a.lines != c.lines


def test_quirks_are_observable(server):
    from rtds_pipeline.protocol.timestamps import parse_iso_ms
    truth = server.ground_truth()
    ids = Counter(r["id"] for r in truth)
    dups = [r for r in truth if r["duplicate"]]
    assert dups and all(ids[r["id"]] >= 2 for r in dups)
    original = {r["id"]: r["event"] for r in truth if not r["duplicate"]}
    for d in dups[:50]:
        o, c = original[d["id"]], d["event"]
        assert {k: v for k, v in o.items() if k not in ("offset", "processed")} == \
               {k: v for k, v in c.items() if k not in ("offset", "processed")}
        assert o["offset"] != c["offset"]
    lag = [parse_iso_ms(r["event"]["processed"]) - parse_iso_ms(r["event"]["occurred"]) for r in truth]
    assert max(lag) > 2 * 86_400_000 and max(lag) < 90 * 86_400_000  # late, never beyond 90 days
    assert any(x < 0 for x in lag)  # small device skew: occurred after processed
    assert sum(1 for x in lag if x == 0) > 0  # clamped future events
    assert any(r["type"] == UNKNOWN_TYPE for r in truth)
    assert any("experimental_attribution" in str(r["event"]) for r in truth)
    processed = [r["event"]["processed"] for r in truth]
    assert processed != sorted(processed)  # processed is not ordered by offset
    pb = {r["event"]["body"]["push_id"] for r in truth if r["type"] == "PUSH_BODY"}
    sent = {r["event"]["body"]["push_id"] for r in truth if r["type"] in ("SEND", "CONTROL")}
    assert pb - sent  # a push that reached no one


# ------------------------------------------------------------------ faults
def test_status_burst(fresh_server):
    srv = fresh_server()
    srv.arm(Fault("status", status=503, times=2))
    assert [post(srv.url, EARLIEST).status_code for _ in range(3)] == [503, 503, 200]
    srv.arm(Fault("status", status=402, times=1))
    assert post(srv.url, EARLIEST).status_code == 402


def test_eof_after_n_events_is_a_clean_gzip_end(fresh_server):
    srv = fresh_server()
    srv.arm(Fault("eof", after=100))
    events = read(srv.url, EARLIEST, seconds=10)
    assert len(events) == 100


def test_reset_after_n_events(fresh_server):
    srv = fresh_server()
    srv.arm(Fault("reset", after=50))
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        read(srv.url, EARLIEST, seconds=10)


def test_cut_line_leaves_a_partial_line(fresh_server):
    srv = fresh_server()
    srv.arm(Fault("cut_line", after=10))
    lines, tail = raw_lines(srv.url, EARLIEST, seconds=5)
    assert len(lines) == 10 and tail and tail.startswith(b'{"id"')


def test_malformed_line_then_stream_goes_on(fresh_server):
    srv = fresh_server()
    srv.arm(Fault("malformed", after=5))
    lines, _ = raw_lines(srv.url, EARLIEST, seconds=1.5)
    assert b"broken" in lines[5] and len(lines) > 100
    assert lines[6].startswith(b'{"id"')


def test_stall_sends_nothing(fresh_server):
    srv = fresh_server()
    srv.arm(Fault("stall", after=20, seconds=3))
    t0 = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        with httpx.Client(timeout=httpx.Timeout(5, read=1.0)) as c, c.stream(
                "POST", srv.url + "/api/events", json=EARLIEST, headers=headers()) as r:
            for _ in r.iter_bytes():
                pass
    assert time.monotonic() - t0 < 3


def test_admin_endpoint_arms_faults_and_exports_ground_truth(fresh_server):
    srv = fresh_server(backlog=300)
    with httpx.Client() as c:
        assert c.post(srv.url + "/admin/faults", json={"kind": "eof", "after": 7}).status_code == 200
        assert c.post(srv.url + "/admin/faults", json={"kind": "nope"}).status_code == 400
        truth = c.get(srv.url + "/admin/ground-truth").text.splitlines()
        stats = c.get(srv.url + "/admin/stats").json()
    assert len(read(srv.url, EARLIEST, seconds=5)) == 7
    assert len(truth) == 300 == stats["test-app-key"]["events"]


def test_airships_documented_curl_command_receives_events(server):
    out = subprocess.run(
        ["curl", "-sS", "-m", "2", f"{server.url}/api/events/", "--compressed",
         "-u", "sample_connection:sample_connection",
         "-H", "Accept: application/vnd.urbanairship+x-ndjson; version=3;", "-d", "{}"],
        capture_output=True, text=True)
    # `{}` starts at LATEST: an idle stream of keep-alives until curl's 2 s cap.
    assert out.returncode == 28 and set(out.stdout) <= {"\n"} and out.stdout
    out = subprocess.run(
        ["curl", "-sS", "-m", "2", f"{server.url}/api/events/", "--compressed",
         "-u", "sample_connection:sample_connection",
         "-H", "Accept: application/vnd.urbanairship+x-ndjson; version=3;", "-d", '{"start":"EARLIEST"}'],
        capture_output=True, text=True)
    assert out.stdout.count('"offset"') > 1000
