"""Each mart on a small hand-made stream whose right answers are worked out by hand, then all
marts on test-server data checked for internal consistency."""

from __future__ import annotations

import base64
import dataclasses
import re

import duckdb
import orjson
import pytest
from landing import SOURCES, build_warehouse, commit_window, event

from rtds_pipeline.extract.ingest import ingest_window
from rtds_pipeline.extract.reader import WindowLimits
from rtds_pipeline.lake.storage import open_lake
from rtds_pipeline.testserver.app import ServerOptions, TestServer
from rtds_pipeline.testserver.log import Quirks
from rtds_pipeline.warehouse import marts

D1, D2 = "2026-11-20", "2026-11-21"
OLD = "2026-09-01"  # 80 days before D2
P1 = "push-1"
P2 = "push-2"  # to web, email and SMS channels
P3 = "push-3"  # to all platforms, not sent yet
EVENTS, COMPLIANCE = SOURCES


def at(day: str, hms: str) -> str:
    return f"{day}T{hms}.000Z"


def dev(channel: str, platform: str = "IOS", country: str = "US", version: str = "5.0",
        opt_in: str = "true") -> dict:
    return {"channel": channel, "device_type": platform,
            "attributes": {"app_version": version, "locale_country_code": country,
                           "push_opt_in": opt_in}}


OPEN_TV = {"channel": "o1", "device_type": "OPEN", "open_platform_name": "smart_tv"}


def web(channel: str) -> dict:
    return {"channel": channel, "device_type": "WEB",
            "attributes": {"locale_country_code": "FR", "push_opt_in": "true",
                           "web_browser_name": "chrome"}}


def email(channel: str | None, address: str) -> dict:
    """An email device; Airship's email events may carry only the address (channel None)."""
    return {"device_type": "EMAIL", "delivery_address": address,
            **({"channel": channel} if channel else {})}


def sms(channel: str, msisdn: str) -> dict:
    return {"channel": channel, "device_type": "SMS", "delivery_address": msisdn,
            "identifiers": {"sender": "12345"}}


def email_event(id_: str, name: str, hms: str, offset: int, device: dict, **body) -> dict:
    """Airship's own email engagement event: a CUSTOM event with source API."""
    return event(id_, "CUSTOM", at(D2, hms), offset, device=device,
                 body={"name": name, "source": "API", "triggering_push": {"push_id": P2},
                       "properties": {"email": device["delivery_address"], "subject": "Sale"},
                       **body})


def sms_report(id_: str, name: str, hms: str, offset: int, device: dict) -> dict:
    """An SMS delivery report from the vendor: a CUSTOM event, interaction_type delivery_report."""
    return event(id_, "CUSTOM", at(D2, hms), offset, device=device,
                 body={"name": name, "source": "API", "interaction_type": "delivery_report",
                       "triggering_push": {"push_id": P2},
                       "properties": {"sender": "12345", "vendor": "TWILIO",
                                      "vendorDeliveryId": id_}})


@pytest.fixture
def con(tmp_path):
    lake = open_lake(str(tmp_path / "lake"))
    payload = base64.b64encode(orjson.dumps({
        "audience": "all", "device_types": ["ios", "android"],
        "notification": {"alert": "Hello"}})).decode()
    push = {"push_id": P1, "campaigns": {"categories": ["promo"]}}
    trig = {"push_id": P1, "time": at(D1, "10:00:00")}
    # Window 1. The OPEN of c1 arrives before its SEND (lower offset), as RTDS allows.
    commit_window(lake, "events", [
        event("open-c1", "OPEN", at(D1, "23:50:00"), 1, device=dev("c1"),
              body={"session_id": "s1", "triggering_push": trig, "last_delivered": trig}),
        event("body-1", "PUSH_BODY", at(D1, "09:59:00"), 2,
              body={"payload": payload, "resource": "PUSH", "trimmed": False, **push}),
        event("send-c1", "SEND", at(D1, "10:00:00"), 3, device=dev("c1"), body=push),
        event("send-c2", "SEND", at(D1, "10:00:01"), 4, device=dev("c2", "ANDROID", "DE"), body=push),
        event("send-c3", "SEND", at(D1, "10:00:02"), 5, device=dev("c3"), body=push),
        event("rej-c4", "SEND_REJECTED", at(D1, "10:00:03"), 6, device=dev("c4"),
              body={**push, "status": "Uninstalled"}),
        event("abort-c5", "SEND_ABORTED", at(D1, "10:00:04"), 7, device=dev("c5"),
              body={**push, "reason": "FREQUENCY_LIMIT_REACHED"}),
        event("first-c2", "FIRST_OPEN", at(D1, "11:00:00"), 8, device=dev("c2", "ANDROID", "DE")),
        # c2's app opened 2 h after the push: influenced, not direct. Its CLOSE never comes.
        event("open-c2", "OPEN", at(D1, "12:00:00"), 9, device=dev("c2", "ANDROID", "DE"),
              body={"session_id": "s2", "last_delivered": trig}),
        # c3 opens 13 h after the push: outside Airship's 12 h window.
        event("open-c3", "OPEN", at(D1, "23:00:00"), 10, device=dev("c3", opt_in="false"),
              body={"session_id": "s3", "last_delivered": trig}),
        event("gone-c3", "UNINSTALL", at(D1, "20:00:00"), 11, device=dev("c3"), body={"decay": True}),
        event("scr-1", "SCREEN_VIEWED", at(D1, "23:55:00"), 12, device=dev("c1"),
              body={"session_id": "s1", "viewed_screen": "home"}),
        # A duplicate copy of c1's SEND: same id, later offset and processed time.
        event("send-c1", "SEND", at(D1, "10:00:00"), 13, device=dev("c1"), body=push,
              processed=at(D1, "10:30:00")),
        event("iam-d1", "IN_APP_MESSAGE_DISPLAY", at(D1, "12:01:00"), 14, device=dev("c1"),
              body={"push_id": "iam-1", "session_id": "s1"}),
        event("iam-d2", "IN_APP_MESSAGE_DISPLAY", at(D1, "12:02:00"), 15, device=dev("c2"),
              body={"push_id": "iam-1", "session_id": "s2"}),
        event("iam-r1", "IN_APP_MESSAGE_RESOLUTION", at(D1, "12:03:00"), 16, device=dev("c1"),
              body={"push_id": "iam-1", "type": "BUTTON_CLICK", "button_id": "ok"}),
        event("iam-r2", "IN_APP_MESSAGE_RESOLUTION", at(D1, "12:04:00"), 17, device=dev("c2"),
              body={"push_id": "iam-1", "type": "USER_DISMISSED"}),
        event("iam-t1", "IN_APP_BUTTON_TAP", at(D1, "12:03:00"), 18, device=dev("c1"),
              body={"push_id": "iam-1", "button_id": "ok"}),
    ])
    # Window 2, the next day: the session of c1 closes after midnight; conversions; a late event.
    commit_window(lake, "events", [
        event("scr-2", "SCREEN_VIEWED", at(D2, "00:05:00"), 20, device=dev("c1"),
              body={"session_id": "s1", "viewed_screen": "cart"}),
        event("buy-c1", "CUSTOM", at(D2, "00:08:00"), 21, device=dev("c1"),
              body={"name": "purchase", "value": 10.0, "session_id": "s1", "triggering_push": trig}),
        event("close-c1", "CLOSE", at(D2, "00:10:00"), 22, device=dev("c1"), body={"session_id": "s1"}),
        event("buy-c2", "CUSTOM", at(D2, "09:00:00"), 23, device=dev("c2", "ANDROID", "DE"),
              body={"name": "purchase", "value": 5.0}),
        event("late-1", "CUSTOM", at(OLD, "08:00:00"), 24, device=dev("c9"),
              body={"name": "purchase", "value": 1.0}, processed=at(D2, "08:00:00")),
        event("iam-x1", "IN_APP_MESSAGE_EXPIRATION", at(D2, "08:00:00"), 25, device=dev("c3"),
              body={"push_id": "iam-1"}),
        # Email consent: opted out by a link, then opted in again (and a duplicate copy).
        event("sub-out", "SUBSCRIPTION", at(D2, "10:00:00"), 26,
              device={"channel": "e1", "device_type": "EMAIL", "delivery_address": "a@example.com"},
              body={"event_type": "link_unsubscribe", "identifiers": {"address": "a@example.com"},
                    "properties": {"commercial_opted_out": at(D2, "10:00:00")}}),
        event("sub-out", "SUBSCRIPTION", at(D2, "10:00:00"), 27,
              device={"channel": "e1", "device_type": "EMAIL", "delivery_address": "a@example.com"},
              body={"event_type": "link_unsubscribe", "identifiers": {"address": "a@example.com"},
                    "properties": {"commercial_opted_out": at(D2, "10:00:00")}},
              processed=at(D2, "10:20:00")),
    ])
    # Window 3: push-2 goes to two web channels, two email addresses and two phones (and no
    # app); what each channel kind does with it. Also a purchase on c6, which push-1 never
    # reached, claiming push-1 as its trigger.
    p2 = {"push_id": P2}
    trig2 = {"push_id": P2, "time": at(D2, "12:00:00")}
    commit_window(lake, "events", [
        event("body-2", "PUSH_BODY", at(D2, "11:59:00"), 40, body={
            "payload": base64.b64encode(orjson.dumps({
                "audience": "all", "device_types": ["web", "email", "sms"],
                "notification": {"alert": "Sale"}})).decode(),
            "resource": "PUSH", "trimmed": False, **p2}),
        event("send2-w1", "SEND", at(D2, "12:00:01"), 41, device=web("w1"), body=p2),
        event("send2-w2", "SEND", at(D2, "12:00:02"), 42, device=web("w2"), body=p2),
        event("send2-e2", "SEND", at(D2, "12:00:03"), 43, device=email("e2", "b@example.com"),
              body={**p2, "open_tracking": True, "click_tracking": True}),
        event("send2-e3", "SEND", at(D2, "12:00:04"), 44, device=email("e3", "c@example.com"),
              body={**p2, "open_tracking": True, "click_tracking": True}),
        event("send2-m1", "SEND", at(D2, "12:00:05"), 45, device=sms("m1", "15550002222"), body=p2),
        event("send2-m3", "SEND", at(D2, "12:00:06"), 46, device=sms("m3", "15550003333"), body=p2),
        # Web: w1 clicks the notification, which starts a session (no CLOSE on web): a screen,
        # then a signup 150 s after the session began. w2 visits without the push and leaves.
        # w3, which push-2 never reached, arrives claiming it (a signup that is no conversion).
        event("click-w1", "WEB_CLICK", at(D2, "12:05:00"), 47, device=web("w1"), body=trig2),
        event("ws-w1", "WEB_SESSION", at(D2, "12:05:00"), 48, device=web("w1"),
              body={"session_id": "ws1", "triggering_push": trig2}),
        event("scr-w1", "SCREEN_VIEWED", at(D2, "12:06:00"), 49, device=web("w1"),
              body={"session_id": "ws1", "viewed_screen": "pricing"}),
        event("signup-w1", "CUSTOM", at(D2, "12:07:30"), 50, device=web("w1"),
              body={"name": "signup", "source": "SDK", "session_id": "ws1",
                    "triggering_push": trig2}),
        event("ws-w2", "WEB_SESSION", at(D2, "13:00:00"), 51, device=web("w2"),
              body={"session_id": "ws2"}),
        event("ws-w3", "WEB_SESSION", at(D2, "14:00:00"), 52, device=web("w3"),
              body={"session_id": "ws3", "triggering_push": trig2}),
        event("signup-w3", "CUSTOM", at(D2, "14:00:40"), 53, device=web("w3"),
              body={"name": "signup", "source": "SDK", "session_id": "ws3",
                    "triggering_push": trig2}),
        # Email: both delivered (e2's report names only its address); e2 opens (the open has a
        # session id of its own), clicks and unsubscribes; e3 bounces. e2 then buys through
        # the API: a custom event of an email channel, and a conversion of push-2.
        email_event("dlv-e2", "delivery", "12:00:13", 54, email(None, "b@example.com")),
        email_event("dlv-e3", "delivery", "12:00:14", 55, email("e3", "c@example.com")),
        email_event("bnc-e3", "bounce", "12:00:15", 56, email("e3", "c@example.com")),
        email_event("opn-e2", "open", "13:00:00", 57, email("e2", "b@example.com"),
                    session_id="es1"),
        email_event("clk-e2", "click", "13:01:00", 58, email("e2", "b@example.com")),
        email_event("uns-e2", "unsubscribe", "13:02:00", 59, email("e2", "b@example.com")),
        event("buy-e2", "CUSTOM", at(D2, "15:00:00"), 60, device=email("e2", "b@example.com"),
              body={"name": "purchase", "source": "API", "value": 20.0,
                    "triggering_push": trig2}),
        # SMS: m1's message is dispatched, delivered and its short link clicked; m3's is
        # undeliverable.
        sms_report("dsp-m1", "dispatched", "12:00:20", 61, sms("m1", "15550002222")),
        sms_report("dlv-m1", "delivered", "12:00:30", 62, sms("m1", "15550002222")),
        sms_report("und-m3", "undeliverable", "12:00:40", 63, sms("m3", "15550003333")),
        event("link-m1", "SHORT_LINK_CLICK", at(D2, "12:10:00"), 64,
              device={**sms("m1", "15550002222"),
                      "attributes": {"web_user_agent_string": "Mozilla/5.0"}},
              body={**p2, "properties": {"original_url": "https://example.com/sale"}}),
        event("buy-c6", "CUSTOM", at(D2, "16:00:00"), 65, device=dev("c6"),
              body={"name": "purchase", "value": 7.0, "triggering_push": trig}),
        # New email, SMS and open channels: their first opt-in (they never send FIRST_OPEN).
        # e2 was active that day anyway; m3 did nothing else (a delivery report is Airship's);
        # o1 opted in on D1 and changed a tag on D2.
        event("fopt-e2", "FIRST_OPT_IN", at(D2, "11:00:00"), 66,
              device=email("e2", "b@example.com")),
        event("fopt-m3", "FIRST_OPT_IN", at(D2, "11:01:00"), 67, device=sms("m3", "15550003333")),
        event("fopt-o1", "FIRST_OPT_IN", at(D1, "14:00:00"), 68, device=OPEN_TV),
        event("tag-o1", "TAG_CHANGE", at(D2, "17:30:00"), 69, device=OPEN_TV,
              body={"add": {"device": ["tv"]}, "current": {"device": ["tv"]}}),
        # push-3 starts (to "all" platforms, as the push API allows) and sends nothing yet.
        event("body-3", "PUSH_BODY", at(D2, "17:00:00"), 70, body={
            "payload": base64.b64encode(orjson.dumps({
                "audience": "all", "device_types": "all",
                "notification": {"alert": "Soon"}})).decode(),
            "resource": "PUSH", "trimmed": False, "push_id": P3}),
    ])
    commit_window(lake, "compliance", [
        event("reg-a", "COMPLIANCE", at(D1, "08:00:00"), 2,
              device={"channel": "e1", "device_type": "EMAIL", "delivery_address": "a@example.com"},
              body={"event_type": "registration", "identifiers": {"address": "a@example.com"},
                    "properties": {"registration_type": "create", "source": "ui",
                                   "commercial_opted_in": at(D1, "08:00:00")}}),
        event("reopt-a", "COMPLIANCE", at(D2, "18:00:00"), 28,
              device={"channel": "e1", "device_type": "EMAIL", "delivery_address": "a@example.com"},
              body={"event_type": "create_and_send", "identifiers": {"address": "a@example.com"},
                    "properties": {"commercial_opted_in": at(D2, "18:00:00")}}),
        event("carrier", "COMPLIANCE", at(D2, "07:00:00"), 29,
              body={"event_type": "carrier_deactivation",
                    "identifiers": {"msisdn": "15550001111", "sender": "12345"},
                    "properties": {"action": "suppressed"}}),
    ])
    return build_warehouse(tmp_path, lake)


def one(con, sql, *params):
    rel = con.execute(sql, list(params))
    cols = [d[0] for d in rel.description]
    rows = rel.fetchall()
    assert len(rows) == 1, rows
    return dict(zip(cols, rows[0], strict=True))


def test_push_performance(con):
    p = one(con, "SELECT * FROM push_performance WHERE push_id = ?", P1)
    assert p["alert"] == "Hello" and p["platforms"] == ["ios", "android"]
    assert p["categories"] == ["promo"]
    assert (p["sends"], p["rejections"], p["aborts"]) == (3, 1, 1)  # the duplicate SEND counts once
    assert p["app_sends"] == 3 and p["sends_by_platform"] == {"IOS": 2, "ANDROID": 1}
    assert p["rejections_by_status"] == {"Uninstalled": 1}
    assert p["aborts_by_reason"] == {"FREQUENCY_LIMIT_REACHED": 1}
    assert (p["direct_opens"], p["direct_open_channels"], p["influenced_opens"]) == (1, 1, 1)
    assert p["direct_open_rate"] == pytest.approx(1 / 3)
    assert p["uninstalls_24h"] == 1  # c3: 10 h after its send
    # c1's purchase in the session push-1 opened; c6's claim is dropped: push-1 never reached c6.
    assert (p["conversions"], p["converting_channels"], p["conversion_value"]) == (1, 1, 10.0)
    assert p["web_clicks"] == p["email_opens"] == p["sms_delivered"] == 0
    # The rate follows what it divides, so a reader sees why it is what it is (or NULL).
    columns = list(p)
    rate = columns.index("direct_open_rate")
    assert columns[rate - 2:rate] == ["direct_open_channels", "app_sends"]


def test_push_performance_of_a_push_to_all_platforms_not_sent_yet(con):
    p = one(con, "SELECT * FROM push_performance WHERE push_id = ?", P3)
    assert (p["alert"], p["platforms"]) == ("Soon", ["all"])
    assert (p["sends"], p["app_sends"], p["first_send_at"], p["sends_by_platform"]) == (
        0, 0, None, None)
    assert (p["variant_id"], p["direct_open_rate"]) == (None, None)


def test_push_performance_on_web_email_and_sms(con):
    p = one(con, "SELECT * FROM push_performance WHERE push_id = ?", P2)
    assert p["alert"] == "Sale" and p["platforms"] == ["web", "email", "sms"]
    assert p["sends"] == 6 and p["sends_by_platform"] == {"WEB": 2, "EMAIL": 2, "SMS": 2}
    # No app channel was sent to: no app opens to expect, no open rate.
    assert (p["app_sends"], p["direct_opens"], p["direct_open_rate"]) == (0, 0, None)
    # w1's signup and e2's API purchase; w3's signup does not count (push-2 never reached w3),
    # and Airship's email/SMS events are engagement, not conversions.
    assert (p["conversions"], p["converting_channels"], p["conversion_value"]) == (2, 2, 20.0)
    assert p["web_clicks"] == 1
    assert (p["email_deliveries"], p["email_opens"], p["email_clicks"], p["email_bounces"],
            p["email_unsubscribes"]) == (2, 1, 1, 1, 1)
    assert (p["sms_delivered"], p["sms_failed"], p["sms_link_clicks"]) == (1, 1, 1)


def test_push_performance_check_flags_more_converting_channels_than_sends():
    mart = marts.BY_NAME["push_performance"]
    con = duckdb.connect()
    con.execute("CREATE TABLE push_performance AS SELECT * FROM (VALUES "
                "('ok', NULL, 2, 2, 1, 2, 0, 0), ('bad', NULL, 1, 1, 0, 2, 0, 0)) "
                "t(push_id, variant_id, sends, app_sends, direct_open_channels, "
                "converting_channels, rejections, aborts)")
    bad, rows = marts.violations(con, mart)
    assert bad == 1 and rows[0][0] == "bad"


def test_sessions(con):
    s1 = one(con, "SELECT * FROM sessions WHERE session_id = 's1'")
    assert s1["duration_s"] == 20 * 60  # 23:50 → 00:10, across midnight
    assert (s1["screens_viewed"], s1["custom_events"], s1["push_initiated"]) == (2, 1, True)
    assert not s1["close_missing"]
    s2 = one(con, "SELECT * FROM sessions WHERE session_id = 's2'")
    assert s2["close_missing"] and s2["ended_at"] is None and s2["duration_s"] is None
    assert not s2["push_initiated"]
    # s1, s2, s3 and the web sessions ws1, ws2, ws3; e2's email open carries a session id of
    # its own, but an email open is no session.
    assert con.execute("SELECT count(*) FROM sessions").fetchall()[0][0] == 6


def test_sessions_longer_than_the_cap_are_flagged_and_keep_their_duration(tmp_path):
    """The cap is 4 hours: a session of exactly 4 h is within it, one a second longer is over it
    (and so is the issue's 87-day session), each with its duration as measured; a session with
    no duration (CLOSE before OPEN, or no CLOSE) is not over it."""
    lake = open_lake(str(tmp_path / "lake"))
    device = dev("c1")

    def session(sid: str, opened: str | None, closed: str | None, offset: int) -> list[dict]:
        return ([event(f"open-{sid}", "OPEN", opened, offset, device=device,
                       body={"session_id": sid})] if opened else []) + (
               [event(f"close-{sid}", "CLOSE", closed, offset + 1, device=device,
                      body={"session_id": sid})] if closed else [])

    commit_window(lake, "events", [
        *session("4h", at(D1, "08:00:00"), at(D1, "12:00:00"), 1),
        *session("4h-1s", at(D1, "08:00:00"), at(D1, "12:00:01"), 3),
        *session("87d", at("2026-09-11", "10:00:00"), at("2026-12-07", "09:00:00"), 5),
        *session("skewed", at(D1, "12:00:00"), at(D1, "11:00:00"), 7),
        *session("open", at(D1, "12:00:00"), None, 9),
    ])
    con = build_warehouse(tmp_path, lake)
    rows = dict((r[0], r[1:]) for r in con.execute(
        "SELECT session_id, duration_s, over_cap, clock_anomaly, close_missing FROM sessions"
    ).fetchall())
    assert rows == {"4h": (4 * 3600, False, False, False),
                    "4h-1s": (4 * 3600 + 1, True, False, False),
                    "87d": (86 * 86400 + 23 * 3600, True, False, False),
                    "skewed": (None, False, True, False),
                    "open": (None, False, False, True)}


def test_web_sessions_end_at_their_last_event(con):
    ws1 = one(con, "SELECT * FROM sessions WHERE session_id = 'ws1'")
    assert ws1["platform"] == "WEB" and ws1["duration_s"] == 150  # 12:05:00 → signup 12:07:30
    assert (ws1["screens_viewed"], ws1["custom_events"], ws1["events"]) == (1, 1, 3)
    assert ws1["push_initiated"] and ws1["triggering_push_id"] == P2
    assert not ws1["close_missing"] and not ws1["open_missing"]
    ws2 = one(con, "SELECT * FROM sessions WHERE session_id = 'ws2'")
    assert ws2["duration_s"] == 0 and ws2["ended_at"] == ws2["started_at"]
    assert not ws2["close_missing"] and not ws2["push_initiated"]
    ws3 = one(con, "SELECT * FROM sessions WHERE session_id = 'ws3'")
    assert ws3["duration_s"] == 40 and ws3["push_initiated"]
    web = one(con, "SELECT count(*) AS n, count(*) FILTER (WHERE close_missing) AS lost "
                   "FROM sessions WHERE platform = 'WEB'")
    assert (web["n"], web["lost"]) == (3, 0)


def test_daily_active_channels(con):
    rows = con.execute("SELECT day::VARCHAR, platform, country, active_channels, new_channels, "
                       "opted_in_channels FROM daily_active_channels ORDER BY ALL").fetchall()
    # D1: IOS/US c1 (opened, screen), c3 (opened with push opt-in false); ANDROID/DE c2 (first open).
    # D2: IOS/US c1, c3 (expiration) and c6 (purchase); ANDROID/DE c2 (custom); WEB/FR w1, w2,
    # w3; EMAIL e2 (open, click, API purchase; new: its FIRST_OPT_IN), not e3 (delivered,
    # bounced: Airship's reports, not e3's doing); SMS m1 (short link click) and m3, active as
    # it is new (its FIRST_OPT_IN; its delivery report is Airship's); OPEN o1 (tag change).
    # D1: OPEN o1, new (FIRST_OPT_IN). OLD: IOS/US c9.
    assert rows == [
        (OLD, "IOS", "US", 1, 0, 1),
        (D1, "ANDROID", "DE", 1, 1, 1),
        (D1, "IOS", "US", 3, 0, 2),  # c1, c3 and c2's in-app display reported as IOS device
        (D1, "OPEN", "(none)", 1, 1, 0),
        (D2, "ANDROID", "DE", 1, 0, 1),
        (D2, "EMAIL", "(none)", 1, 1, 0),
        (D2, "IOS", "US", 3, 0, 3),
        (D2, "OPEN", "(none)", 1, 0, 0),
        (D2, "SMS", "(none)", 2, 1, 0),
        (D2, "WEB", "FR", 3, 0, 3),
    ]


def test_custom_events_daily_keeps_the_late_event_in_its_day(con):
    rows = con.execute("SELECT day::VARCHAR, event_name, events, unique_channels, value_sum, "
                       "conversions, conversion_value FROM custom_events_daily "
                       "ORDER BY day, event_name").fetchall()
    # D2 purchases: c1 (10, converted by push-1), c2 (5), e2 through the API (20, converted by
    # push-2) and c6 (7, claims push-1, which never reached c6). Signups: w1 (converted by
    # push-2) and w3 (not reached). Airship's email events (delivery, open, click, bounce,
    # unsubscribe) and SMS delivery reports are no custom events: no rows of theirs.
    assert rows == [(OLD, "purchase", 1, 1, 1.0, 0, 0.0),
                    (D2, "purchase", 4, 4, 42.0, 2, 30.0),
                    (D2, "signup", 2, 2, 0.0, 1, 0.0)]


def test_in_app_funnel(con):
    f = one(con, "SELECT * FROM in_app_funnel WHERE push_id = 'iam-1'")
    assert (f["displays"], f["channels_displayed"], f["resolutions"]) == (2, 2, 2)
    assert (f["button_click_resolutions"], f["dismissed"], f["timed_out"]) == (1, 1, 0)
    assert (f["button_taps"], f["expirations"]) == (1, 1)


def test_uninstalls(con):
    u = one(con, "SELECT * FROM uninstalls")
    assert (u["day"].isoformat(), u["platform"], u["uninstalls"]) == (D1, "IOS", 1)
    assert (u["decay_inferred"], u["explicit"]) == (1, 0)
    assert u["median_channel_age_days"] == pytest.approx(10 / 24 - 2 / 86400)  # SEND 10:00:02 → 20:00


def test_consent_ledger_and_current_state(con):
    ledger = con.execute("SELECT ledger_seq, message_type, state, action, event_id "
                         "FROM consent_ledger WHERE address = 'a@example.com' ORDER BY ledger_seq").fetchall()
    assert ledger == [
        (1, "commercial", "opted_in", "registration", "reg-a"),
        (2, "commercial", "opted_out", "link_unsubscribe", "sub-out"),  # one row for two copies
        (3, "commercial", "opted_in", "create_and_send", "reopt-a"),
    ]
    assert one(con, "SELECT state FROM consent_current WHERE address = 'a@example.com'")["state"] == "opted_in"
    sms = one(con, "SELECT * FROM consent_current WHERE address = '15550001111'")
    assert (sms["message_type"], sms["state"]) == ("sms", "suppressed")


def test_stream_health(con):
    h = one(con, "SELECT * FROM stream_health WHERE hour_utc = TIMESTAMP '2026-11-20 10:00:00'")
    # Processed 10:00–11:00 (processed defaults to occurred): the SENDs of c1 (two copies), c2
    # and c3, the rejection and the abort; the PUSH_BODY was processed at 09:59.
    assert (h["events"], h["copies_delivered"]) == (5, 6)
    assert h["duplicate_rate"] == pytest.approx(1 / 6)
    late = one(con, "SELECT * FROM stream_health WHERE hour_utc = TIMESTAMP '2026-11-21 08:00:00'")
    assert late["late_events"] == 1 and late["latency_max_s"] == 81 * 86400  # Sep 1 → Nov 21


def test_marts_on_test_server_data_are_consistent(tmp_path):
    """No quirks: every open's push was sent to that channel, so direct opens ≤ sends holds."""
    with TestServer(ServerOptions(port=0, backlog=8000, seed=11, quirks=Quirks.none())) as srv:
        lake = open_lake(str(tmp_path / "lake"))
        for source in (EVENTS, COMPLIANCE):
            src = dataclasses.replace(source, base_url=srv.url)
            ingest_window(src, lake, WindowLimits(max_seconds=60, idle_timeout=10))
    con = build_warehouse(tmp_path, lake)  # asserts grain uniqueness and every mart's own check
    counts = {m.name: con.execute(f"SELECT count(*) FROM {m.name}").fetchall()[0][0]
              for m in marts.MARTS}
    assert all(counts.values()), counts
    bad = con.execute("SELECT count(*) FROM push_performance "
                      "WHERE sends > 0 AND direct_open_channels > sends").fetchall()[0][0]
    assert bad == 0


def test_each_mart_header_agrees_with_its_sql(con):
    """The header is the registry: its grain and unique key are columns of the mart, the grain
    is unique (build_warehouse checks it) and lies within one unique key (a refresh deletes and
    recomputes whole keys), its Refresh line says daily exactly for marts keyed by day, and the
    tables it reads are the staging, the windows or other marts."""
    known = {"stg_events", "landing_windows", *marts.BY_NAME}
    for mart in marts.MARTS:
        columns = {r[0] for r in con.execute(f"DESCRIBE {mart.name}").fetchall()}
        assert set(mart.grain) <= columns and mart.unique_key in columns, mart.name
        assert set(mart.nullable) <= columns, (mart.name, set(mart.nullable) - columns)
        split = con.execute(
            f"SELECT count(*) FROM (SELECT {', '.join(mart.grain)} FROM {mart.name} GROUP BY ALL "
            f"HAVING count(DISTINCT {mart.unique_key}) > 1)").fetchall()[0][0]
        assert split == 0, mart.name
        refresh = next(line for line in mart.description.split("Refresh: ")[1:])
        assert refresh.startswith("daily" if mart.daily else "incremental"), mart.name
        assert set(mart.reads) <= known and "events" not in mart.reads, (mart.name, mart.reads)


def test_a_header_that_disagrees_is_refused():
    sql = marts.BY_NAME["sessions"].query
    with pytest.raises(ValueError, match="Unique key"):
        marts.parse_header("sessions", re.sub(r"-- Unique key: session_key.*\n", "", sql))
    with pytest.raises(ValueError, match="Nullable"):
        marts.parse_header("sessions", sql.replace("-- Nullable:", "-- Maybe NULL:"))
    with pytest.raises(ValueError, match=r"col \(when"):  # a reason outside its parentheses
        marts.parse_header("sessions", sql.replace("-- Nullable: ended_at (",
                                                   "-- Nullable: ended_at when ("))
    assert marts.tables_read(sql) == ("stg_events",)
    assert marts.BY_NAME["consent_current"].reads == ("consent_ledger",)
    assert set(marts.BY_NAME["stream_health"].reads) == {"stg_events", "landing_windows"}


def undocumented_nulls(con, mart: marts.Mart) -> set[str]:
    """The mart's columns that hold a NULL its header's Nullable lines do not name."""
    columns = [r[0] for r in con.execute(f"DESCRIBE {mart.name}").fetchall()]
    nulls = con.execute("SELECT " + ", ".join(f"count(*) - count({c})" for c in columns)
                        + f" FROM {mart.name}").fetchall()[0]
    return {c for c, n in zip(columns, nulls, strict=True) if n} - set(mart.nullable)


def test_every_null_a_mart_holds_is_named_in_its_header(con, tmp_path):
    """On the hand-made stream and on test-server data with its quirks, every column that holds
    a NULL is one its header's `-- Nullable:` lines name (and say when)."""
    apart = tmp_path / "served"  # the hand-made stream's lake and warehouse are in tmp_path
    with TestServer(ServerOptions(port=0, backlog=8000, seed=21)) as srv:
        lake = open_lake(str(apart / "lake"))
        for source in (EVENTS, COMPLIANCE):
            ingest_window(dataclasses.replace(source, base_url=srv.url), lake,
                          WindowLimits(max_seconds=60, idle_timeout=10))
    served = build_warehouse(apart, lake)
    for data in (con, served):
        assert {m.name: undocumented_nulls(data, m) for m in marts.MARTS} == {
            m.name: set() for m in marts.MARTS}
    # Not vacuous: the NULLs a new user met are there, and named.
    held = {(m.name, c) for m in marts.MARTS for c in m.nullable
            if served.execute(f"SELECT count(*) FROM {m.name} WHERE {c} IS NULL").fetchall()[0][0]}
    assert {("sessions", "ended_at"), ("sessions", "duration_s"),
            ("push_performance", "direct_open_rate"), ("consent_ledger", "message_type"),
            ("consent_ledger", "state")} <= held


def test_a_null_its_header_does_not_name_is_caught(con):
    sessions = marts.BY_NAME["sessions"]
    assert undocumented_nulls(con, sessions) == set()
    unnamed = re.sub(r"-- Nullable: ended_at .*\n", "", sessions.query)
    assert undocumented_nulls(con, marts.parse_header("sessions", unnamed)) == {"ended_at"}
