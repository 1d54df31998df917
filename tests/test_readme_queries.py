"""Every question in the README's "Ask the warehouse" runs on test-server data and gives an
answer a marketer would believe: each has a plausibility check (ranges, not exact numbers, so
the checks hold for any seed and survive new columns)."""

from __future__ import annotations

import dataclasses
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from landing import SOURCES, build_warehouse

from rtds_pipeline.extract.ingest import ingest_window
from rtds_pipeline.extract.reader import WindowLimits
from rtds_pipeline.lake.storage import open_lake
from rtds_pipeline.testserver.app import ServerOptions, TestServer

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_queries() -> list[tuple[str, str]]:
    text = README.read_text()
    section = text[text.index("<!-- ask:begin -->"):text.index("<!-- ask:end -->")]
    found = re.findall(r"\*\*(.+?)\*\*.*?```sql\n(.*?)```", section, flags=re.S)
    return [(q.strip(), sql.strip()) for q, sql in found]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("demo")
    # Enough for every question to have an answer at realistic rates (a few SMS opt-outs).
    with TestServer(ServerOptions(port=0, backlog=20_000, seed=21)) as srv:
        lake = open_lake(str(tmp / "lake"))
        for source in SOURCES:
            ingest_window(dataclasses.replace(source, base_url=srv.url), lake,
                          WindowLimits(max_seconds=60, idle_timeout=10))
    build_warehouse(tmp, lake).close()
    return tmp / "wh.duckdb"


def test_the_readme_asks_at_least_eight_questions():
    assert len(readme_queries()) >= 8


@pytest.mark.parametrize("question,query", readme_queries(), ids=[q for q, _ in readme_queries()])
def test_readme_question_answers_plausibly(demo, question, query):
    import duckdb
    con = duckdb.connect(str(demo), read_only=True)
    try:
        cur = con.execute(query)
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        assert rows, f"no answer to: {question}"
        plausible = [check for key, check in PLAUSIBLE.items() if key in question]
        assert len(plausible) == 1, f"no plausibility check (or several) for: {question}"
        plausible[0](rows, con)
    finally:
        con.close()


def test_every_plausibility_check_has_its_question():
    questions = [q for q, _ in readme_queries()]
    assert all(any(key in q for q in questions) for key in PLAUSIBLE), sorted(PLAUSIBLE)


# ---------------------------------------------------------------------------- plausibility
# Rates as the generator's cited benchmarks allow (testserver/generator.py), with room for the
# demo's small samples: a push reaches tens of channels, a day has a few hundred active.
def within(hits: float, trials: float, p: float) -> bool:
    """`hits` of `trials` is no more than a rate `p` makes likely (4 standard deviations)."""
    return hits <= trials * p + 4 * (trials * p) ** 0.5 + 2


def total(rows, column: str) -> float:
    return sum(r[column] or 0 for r in rows)


def pushes(rows, con):
    for r in rows:
        assert 0 <= r["direct_opens"] and within(r["direct_opens"], r["sends"], 0.07), r
        assert r["direct_open_pct"] is None or 0 <= r["direct_open_pct"] <= 100, r  # no app sends
        assert r["influenced_opens"] <= r["sends"] and r["conversions"] >= 0, r
        assert within(r["uninstalls_24h"], r["sends"], 0.01), r  # well under 1 % of sends
    assert total(rows, "uninstalls_24h") <= 0.02 * total(rows, "sends") + 2
    # Direct opens: iOS ~2–2.5 %, Android ~3–6 % of app sends [LP] [CB] [BZ].
    rates = [r["direct_open_pct"] for r in rows if r["sends"] >= 20 and r["direct_open_pct"] is not None]
    assert rates and statistics.median(rates) <= 10, rates


def channels(rows, con):
    sends = {k: v for r in rows for k, v in (r["sends_by_platform"] or {}).items()}
    assert sends
    for r in rows:
        by = r["sends_by_platform"] or {}
        # Engagement follows a send to that channel; a SEND may still be on its way (RTDS does
        # not order by occurred) or have come as an unknown type, hence a little room.
        assert r["web_clicks"] <= by.get("WEB", 0) + 2, r
        assert r["email_deliveries"] + r["email_bounces"] <= by.get("EMAIL", 0) * 1.05 + 2, r
        assert r["email_opens"] <= r["email_deliveries"] + 2, r
        assert r["email_clicks"] <= r["email_opens"] + 2, r
        assert r["sms_delivered"] <= by.get("SMS", 0) * 1.05 + 2, r
        assert r["sms_link_clicks"] <= r["sms_delivered"] + 2, r
    # Opens 15–23 % of deliveries, SMS clicks ~9–15 % of delivered [MC] [KV].
    assert within(total(rows, "email_opens"), total(rows, "email_deliveries"), 0.25)
    assert within(total(rows, "sms_link_clicks"), total(rows, "sms_delivered"), 0.15)


def active(rows, con):
    for r in rows:
        assert 0 <= r["new"] <= r["active"], r
    # New installs and subscribers a day are a small share of the day's active channels.
    assert total(rows, "new") <= 0.2 * total(rows, "active")


def sessions(rows, con):
    for r in rows:
        if r["sessions"] >= 50:
            # Shopping apps: 3–5 minutes on average [SL]; a web visit (no CLOSE) is shorter.
            low = 5 if r["platform"] == "WEB" else 30
            assert low <= r["median_seconds"] <= 15 * 60, r
        assert 0 <= r["push_initiated_pct"] <= 40, r
        assert r["still_open_or_lost"] <= 0.25 * r["sessions"], r  # latent or lost CLOSEs
    anomalies, app = con.execute(
        "SELECT count(*) FILTER (WHERE clock_anomaly), count(*) FROM sessions "
        "WHERE platform IN ('IOS', 'ANDROID', 'AMAZON')").fetchall()[0]
    assert app and anomalies <= 0.02 * app, (anomalies, app)


def custom_events(rows, con):
    for r in rows:
        assert r["channel_days"] <= r["events"] and r["push_conversions"] <= r["events"], r
        assert (r["value"] or 0) >= 0, r
    names = {r["event_name"] for r in rows}
    assert "purchase" in names, names


def consent_history(rows, con):
    assert [r["ledger_seq"] for r in rows] == list(range(1, len(rows) + 1))
    assert [r["occurred"] for r in rows] == sorted(r["occurred"] for r in rows)
    states = {r["state"] for r in rows}
    assert states <= {"opted_in", "opted_out", "suppressed", "subscribed", "unsubscribed", None}
    # Events that change no consent (a bounce, HELP, a double opt-in request) are the minority.
    nothing, rows_all = con.execute(
        "SELECT count(*) FILTER (WHERE message_type IS NULL AND state IS NULL), count(*) "
        "FROM consent_ledger").fetchall()[0]
    assert nothing <= 0.4 * rows_all, (nothing, rows_all)


def sms_opt_outs(rows, con):
    assert len({r["address"] for r in rows}) == len(rows)
    assert all(r["since"] is not None for r in rows)
    assert [r["since"] for r in rows] == sorted((r["since"] for r in rows), reverse=True)


def uninstalls(rows, con):
    day_active = dict(((d, p), n) for d, p, n in con.execute(
        "SELECT day, platform, sum(active_channels) FROM daily_active_channels GROUP BY ALL"
    ).fetchall())
    for r in rows:
        assert r["uninstalls"] == r["decay_inferred"] + r["explicit"], r
        assert r["median_age_days"] is None or r["median_age_days"] >= 0, r
    # A day loses a small share of its active channels (AppsFlyer: 9–21 % of a shopping app's
    # installs within 30 days; an installed base slower).
    gone = total(rows, "uninstalls")
    assert gone <= 0.05 * sum(day_active.get((r["day"], r["platform"]), 0) for r in rows) + 2


def stream_health(rows, con):
    for r in rows:
        assert 0 <= r["duplicate_pct"] <= 100 and r["late_events"] <= r["events"], r
        assert r["future_occurred"] <= r["events"] and r["dead_letters"] == 0, r
    # The test server copies ~1 % of events (Quirks.duplicate); a copy follows within minutes.
    duplicates = sum(r["events"] * r["duplicate_pct"] / 100 for r in rows)
    assert 0.002 <= duplicates / total(rows, "events") <= 0.03


def late_data(rows, con):
    assert all(1 <= r["days_late"] <= 90 for r in rows), rows
    everything = con.execute("SELECT count(*) FROM events").fetchall()[0][0]
    late = sum(r["events"] for r in rows if r["days_late"] >= 2)
    assert 0 < late <= 0.05 * everything, (late, everything)  # late batches are rare, not absent


def pipeline_lag(rows, con):
    for r in rows:
        assert r["windows"] >= 1 and r["newest_processed"] <= r["last_commit"], r


PLAUSIBLE = {
    "latest day's pushes": pushes,
    "web, email and SMS": channels,
    "channels were active each day": active,
    "app and web sessions": sessions,
    "custom events": custom_events,
    "consent history": consent_history,
    "opted out of SMS": sms_opt_outs,
    "uninstalling": uninstalls,
    "stream healthy": stream_health,
    "arrives late": late_data,
    "behind the stream": pipeline_lag,
}


def test_the_plain_duckdb_cli_opens_the_warehouse_read_only(demo):
    duckdb_cli = Path(sys.executable).with_name("duckdb")
    if not duckdb_cli.exists():
        pytest.fail("the DuckDB CLI is not installed: `make test` installs it (duckdb-cli)")
    out = subprocess.run([str(duckdb_cli), "-readonly", "-csv", str(demo), "-c",
                          "SELECT count(*) AS n FROM events"],
                         capture_output=True, text=True, check=True)
    assert int(out.stdout.strip().splitlines()[-1]) > 10_000


def test_rtds_pipeline_sql_reads_the_published_warehouse(demo):
    out = subprocess.run([sys.executable, "-m", "rtds_pipeline.cli", "sql", "--warehouse", str(demo),
                          "--csv", "select count(*) as n from events"],
                         capture_output=True, text=True, check=True)
    header, value = out.stdout.strip().splitlines()
    assert header == "n" and int(value) > 10_000
    bad = subprocess.run([sys.executable, "-m", "rtds_pipeline.cli", "sql", "--warehouse",
                          str(demo), "select * from no_such_table"], capture_output=True, text=True)
    assert bad.returncode == 1 and "no_such_table" in bad.stderr
