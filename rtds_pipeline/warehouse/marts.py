"""The marts: DuckDB tables built from `events` / `compliance_events` by one SQL file each
(`warehouse/marts/<name>.sql`, grain and refresh documented at its top), each with a check
(`<name>.check.sql`, returning the rows that break it) besides uniqueness of its grain."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import duckdb

from rtds_pipeline.warehouse.events import TABLES

MART_DIR = Path(__file__).parent / "marts"
MACROS = MART_DIR / "_macros.sql"  # shared by several marts; temporary, per connection


@dataclasses.dataclass(frozen=True)
class Mart:
    name: str
    grain: tuple[str, ...]  # columns that identify a row
    daily: bool  # refreshed per day partition (a `day` column, `$days` in the SQL)
    reads: tuple[str, ...] = ("events",)  # tables (or marts) it is built from

    @property
    def query(self) -> str:
        return (MART_DIR / f"{self.name}.sql").read_text().strip().rstrip(";")

    @property
    def check_query(self) -> str:
        return (MART_DIR / f"{self.name}.check.sql").read_text().strip().rstrip(";")

    @property
    def description(self) -> str:
        lines = []
        for line in self.query.splitlines():
            if not line.startswith("--"):
                break
            lines.append(line[2:].strip())
        return " ".join(lines)


MARTS = (
    Mart("push_performance", ("push_id", "variant_id"), daily=False),
    Mart("daily_active_channels", ("day", "platform", "app_version", "country"), daily=True),
    Mart("sessions", ("session_id",), daily=False),
    Mart("custom_events_daily", ("day", "event_name"), daily=True),
    Mart("in_app_funnel", ("push_id",), daily=False),
    Mart("consent_ledger", ("event_id", "message_type"), daily=False,
         reads=("events", "compliance_events")),
    Mart("consent_current", ("address", "message_type"), daily=False, reads=("consent_ledger",)),
    Mart("uninstalls", ("day", "platform"), daily=True),
    Mart("stream_health", ("hour_utc",), daily=False,
         reads=("events", "compliance_events", "landing_windows")),
)
BY_NAME = {m.name: m for m in MARTS}


def marts_for(kinds: set[str]) -> list[Mart]:
    """The marts whose tables the configured sources feed (a mart reading compliance_events
    needs a compliance source; one reading another mart needs that mart)."""
    tables = {TABLES[k] for k in kinds} | {"landing_windows"}
    out = []
    for mart in MARTS:
        if all(t in tables for t in mart.reads):
            out.append(mart)
            tables.add(mart.name)
    return out


def refresh(con: duckdb.DuckDBPyConnection, mart: Mart, days: Sequence[str] = ()) -> int:
    """Rebuild the mart (or its `days`) in one transaction; returns the rows written."""
    con.execute(MACROS.read_text())
    con.execute("BEGIN TRANSACTION")
    try:
        if mart.daily:
            dates = [dt.date.fromisoformat(d) for d in days]
            con.execute(f"CREATE TABLE IF NOT EXISTS {mart.name} AS "
                        f"SELECT * FROM ({mart.query}) LIMIT 0", {"days": []})
            con.execute(f"DELETE FROM {mart.name} WHERE list_contains($days, day)", {"days": dates})
            con.execute(f"INSERT INTO {mart.name} {mart.query}", {"days": dates})
            written = con.execute(f"SELECT count(*) FROM {mart.name} WHERE list_contains($days, day)",
                                  {"days": dates}).fetchall()[0][0]
        else:
            con.execute(f"CREATE OR REPLACE TABLE {mart.name} AS {mart.query}")
            written = con.execute(f"SELECT count(*) FROM {mart.name}").fetchall()[0][0]
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return written


def grain_duplicates(con: duckdb.DuckDBPyConnection, mart: Mart) -> int:
    cols = ", ".join(mart.grain)
    return con.execute(f"SELECT count(*) FROM (SELECT {cols} FROM {mart.name} GROUP BY ALL "
                       "HAVING count(*) > 1)").fetchall()[0][0]


def violations(con: duckdb.DuckDBPyConnection, mart: Mart, limit: int = 5) -> tuple[int, list[tuple]]:
    rows = con.execute(mart.check_query).fetchall()
    return len(rows), rows[:limit]


def preview(con: duckdb.DuckDBPyConnection, mart: Mart, limit: int = 5) -> str:
    """The first rows as a Markdown table (for Dagster metadata)."""
    rel = con.sql(f"SELECT * FROM {mart.name} LIMIT {limit}")
    cols = rel.columns
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rel.fetchall():
        lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
    return "\n".join(lines)


def _cell(value: object) -> str:
    text = "" if value is None else str(value)
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= 40 else text[:37] + "…"
