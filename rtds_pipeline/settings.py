"""One settings object: environment variables with an `RTDS_` prefix, plus an optional sources
file (TOML) for several sources. With nothing set, everything points at the built-in test
server and local folders, so `make run` works as written.

Secrets are never values in files: a source names the environment variable that holds its token
or master secret (`token_env`, `secret_env`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from rtds_pipeline.extract.connection import Endpoint
from rtds_pipeline.protocol.events import BASE_URLS, IDLE_RECONNECT_SECONDS
from rtds_pipeline.protocol.loopback import (
    TEST_ACCESS_TOKEN,
    TEST_APP_KEY,
    TEST_MASTER_SECRET,
    TEST_SERVER_URL,
)
from rtds_pipeline.protocol.request import STARTS, RequestError, StreamRequest

# The defaults, each written here once; the reader and the resources import them. With nothing
# configured, a source reads the built-in test server's public app (rtds/loopback.py).
TOKEN_ENV = "RTDS_ACCESS_TOKEN"  # the environment variables that hold a source's secrets
SECRET_ENV = "RTDS_MASTER_SECRET"
START = "EARLIEST"  # where a source with no commit begins
WINDOW_SECONDS = 40.0
WINDOW_MAX_EVENTS = 2_000_000
WINDOW_MAX_BYTES = 2 << 30
IDLE_TIMEOUT = IDLE_RECONNECT_SECONDS  # Airship's rule: 90 s of silence means reconnect
MAX_LINE_BYTES = 4 << 20  # Airship events are a few KB; a longer line is dead-lettered
BACKOFF_402_SECONDS = 30.0  # Airship's rule: after a 402, wait at least this long
DUCKDB_MEMORY_LIMIT = "2GB"  # of the warehouse writer
# The horizon: the writer keeps the dedupe keys of the days within it of the stream's newest
# `processed` (3 days: a day's late devices and a weekend's outage); older days live in the lake.
HOT_HOURS = 72.0
STORE_RETRY_SECONDS = 60.0  # how long object-store failures are retried (lake/retry.py)
# The lake's lifecycle (lake/compaction.py, lake/live.py).
COMPACT_MAX_FILES = 4  # per source and settled day
COMPACT_SETTLE_DAYS = 1  # a day is settled once it is at least this many days before today (UTC)
# Files committed less than this long ago wait for the next compaction. 0: a window the warehouse
# has not loaded yet is loaded from the files its record lists, which superseded files outlive
# (SUPERSEDED_RETENTION_HOURS), and the loader reads a compaction only after those windows.
COMPACT_MIN_AGE_HOURS = 0.0
SUPERSEDED_RETENTION_HOURS = 6.0  # longer than any warehouse run that listed them
ORPHAN_GRACE_HOURS = 1.0  # longer than any window: younger unlisted files may still be committed
# The first daily partition, fixed so that the partitions do not move from one day to the next.
# RTDS delivers events up to 90 days old: a pipeline first run after 2026-04-01 receives none
# before it. RTDS_FIRST_DAY moves it (e.g. later, for fewer partitions in the UI).
FIRST_DAY = "2026-01-01"


class SettingsError(ValueError):
    """A setting is missing or wrong; the message names it and how to fix it."""


@dataclasses.dataclass(frozen=True)
class SourceConfig:
    name: str
    kind: str = "events"  # or "compliance" (/api/events/general), or "webhook" (Airship POSTs)
    base_url: str = TEST_SERVER_URL
    app_key: str = TEST_APP_KEY
    token_env: str = TOKEN_ENV
    secret_env: str = SECRET_ENV
    start: str = START
    filters: tuple[dict[str, Any], ...] = ()
    subset: dict[str, Any] | None = None

    @property
    def key(self) -> str:
        """Name of its cursor and landing prefix; one per PARTITION subset."""
        if self.subset and self.subset.get("type") == "PARTITION":
            return f"{self.name}-p{self.subset['selection']}of{self.subset['count']}"
        return self.name

    @property
    def compliance(self) -> bool:
        return self.kind == "compliance"

    @property
    def feeds(self) -> str:
        """The table this source's landing feeds: "events" (stream or webhook) or "compliance"."""
        return "compliance" if self.compliance else "events"

    @property
    def webhook(self) -> bool:
        """Airship POSTs to our receiver (`rtds-pipeline webhook`): no stream to read."""
        return self.kind == "webhook"

    def endpoint(self) -> Endpoint:
        if self.webhook:
            raise SettingsError(f"source {self.name!r} is a webhook source: Airship POSTs its "
                                "events to `rtds-pipeline webhook`; there is no stream to read")
        # The built-in test server's public credentials apply only on loopback.
        host = urlsplit(self.base_url).hostname or ""
        is_test_server = host in ("127.0.0.1", "localhost", "::1")
        if self.compliance:
            secret = os.environ.get(self.secret_env) or (
                TEST_MASTER_SECRET if is_test_server else None)
            if not secret:
                raise SettingsError(f"source {self.name!r}: set the master secret in ${self.secret_env}")
            return Endpoint(self.base_url, self.app_key, master_secret=secret, compliance=True)
        token = os.environ.get(self.token_env) or (TEST_ACCESS_TOKEN if is_test_server else None)
        if not token:
            raise SettingsError(f"source {self.name!r}: set the RTDS access token in ${self.token_env}")
        return Endpoint(self.base_url, self.app_key, access_token=token)

    def request(self) -> StreamRequest:
        req = StreamRequest(filters=self.filters, subset=self.subset)
        try:
            return req.validate(compliance=self.compliance)
        except RequestError as exc:
            raise SettingsError(f"source {self.name!r}: {exc}") from None


@dataclasses.dataclass(frozen=True)
class Settings:
    lake_url: str = "data/lake"
    warehouse_path: str = "data/warehouse.duckdb"
    sources: tuple[SourceConfig, ...] = ()
    window_seconds: float = WINDOW_SECONDS
    window_max_events: int = WINDOW_MAX_EVENTS
    window_max_bytes: int = WINDOW_MAX_BYTES
    idle_timeout: float = IDLE_TIMEOUT
    duckdb_memory_limit: str = DUCKDB_MEMORY_LIMIT
    hot_hours: float = HOT_HOURS  # the horizon of the writer's local state (warehouse/events.py)
    tick_seconds: int = 15  # between two sensor ticks, and a caught-up reader's windows
    read_run_seconds: float = 600.0  # how long one reading run reads windows
    marts_seconds: int = 60  # minimum interval between two marts refreshes
    first_day: str = FIRST_DAY  # first daily partition (YYYY-MM-DD, UTC)
    max_line_bytes: int = MAX_LINE_BYTES  # a longer stream line is dead-lettered (prefix + length)
    backoff_402_seconds: float = BACKOFF_402_SECONDS
    store_retry_seconds: float = STORE_RETRY_SECONDS
    compact_max_files: int = COMPACT_MAX_FILES
    compact_settle_days: int = COMPACT_SETTLE_DAYS
    superseded_retention_hours: float = SUPERSEDED_RETENTION_HOURS
    orphan_grace_hours: float = ORPHAN_GRACE_HOURS
    compact_min_age_hours: float = COMPACT_MIN_AGE_HOURS
    housekeeping_cron: str = "7-59/15 * * * *"
    dagster_history_days: float = 7.0  # Dagster events older than this are pruned (defs/instance.py)

    def lake_housekeeping(self) -> dict[str, Any]:
        """Keyword arguments of `lake.compaction.housekeep`."""
        return {"max_files": self.compact_max_files, "settle_days": self.compact_settle_days,
                "superseded_retention_s": self.superseded_retention_hours * 3600,
                "orphan_grace_s": self.orphan_grace_hours * 3600,
                "min_file_age_s": self.compact_min_age_hours * 3600,
                "memory_limit": self.duckdb_memory_limit}

    def source(self, name: str | None) -> SourceConfig:
        if name is None:
            return self.sources[0]
        for s in self.sources:
            if name in (s.name, s.key):
                return s
        raise SettingsError(f"no source named {name!r}; configured: "
                            f"{', '.join(s.key for s in self.sources)}")


def _base_url(raw: dict[str, Any], where: str) -> str:
    if raw.get("base_url"):
        return str(raw["base_url"])
    region = raw.get("region")
    if region:
        if region not in BASE_URLS:
            raise SettingsError(f"{where}: region must be one of {', '.join(BASE_URLS)}")
        return BASE_URLS[region]
    return TEST_SERVER_URL


def _source(raw: dict[str, Any], where: str) -> list[SourceConfig]:
    known = {f.name for f in dataclasses.fields(SourceConfig)} | {"region", "partitions"}
    unknown = set(raw) - known
    if unknown:
        raise SettingsError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    if "name" not in raw:
        raise SettingsError(f"{where}: every source needs a name")
    base = SourceConfig(
        name=raw["name"], kind=raw.get("kind", "events"), base_url=_base_url(raw, where),
        app_key=raw.get("app_key", TEST_APP_KEY),
        token_env=raw.get("token_env", TOKEN_ENV), secret_env=raw.get("secret_env", SECRET_ENV),
        start=raw.get("start", START), filters=tuple(raw.get("filters", ())),
        subset=raw.get("subset"))
    if base.kind not in ("events", "compliance", "webhook"):
        raise SettingsError(f"{where}: kind must be 'events', 'compliance' or 'webhook'")
    if base.kind == "webhook":
        stream_keys = sorted(set(raw) & {"base_url", "region", "app_key", "token_env",
                                         "secret_env", "start", "filters", "subset", "partitions"})
        if stream_keys:
            raise SettingsError(f"{where}: a webhook source has no stream to read; remove "
                                f"{', '.join(stream_keys)} (Airship's dashboard chooses the types)")
        return [base]
    if base.start not in STARTS:
        raise SettingsError(f"{where}: start must be EARLIEST or LATEST")
    # `partitions = N` is shorthand for N readers, one per PARTITION subset.
    n = raw.get("partitions")
    out = ([dataclasses.replace(base, subset={"type": "PARTITION", "count": n, "selection": i})
            for i in range(n)] if n else [base])
    for s in out:
        s.request()
    return out


def _hours(value: str | None, default: float, name: str) -> float:
    if value is None or value == "":
        return default
    try:
        hours = float(value)
    except ValueError:
        hours = -1.0
    if not 1 <= hours <= 90 * 24:
        raise SettingsError(f"{name}={value!r}: give a number of hours from 1 to 2160 (90 days, "
                            f"RTDS's oldest event), e.g. {name}={default:g}")
    return hours


def _day(value: str, name: str) -> str:
    try:
        return dt.date.fromisoformat(value).isoformat()
    except ValueError:
        raise SettingsError(f"{name}={value!r}: expected a day as YYYY-MM-DD, e.g. {FIRST_DAY}") from None


def _absolute(url: str) -> str:
    """Local lake paths are made absolute, so Dagster's run workers agree with the CLI."""
    return url if "://" in url else os.path.abspath(url)


def load_settings(env: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ if env is None else env)
    sources_file = env.get("RTDS_SOURCES_FILE")
    sources: list[SourceConfig] = []
    if sources_file:
        path = Path(sources_file)
        try:
            doc = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError(f"RTDS_SOURCES_FILE={sources_file}: {exc}") from None
        for i, raw in enumerate(doc.get("sources", [])):
            sources.extend(_source(raw, f"{sources_file}: sources[{i}]"))
    else:
        raw = {"name": env.get("RTDS_SOURCE_NAME", "events"),
               "base_url": env.get("RTDS_BASE_URL"), "region": env.get("RTDS_REGION"),
               "app_key": env.get("RTDS_APP_KEY", TEST_APP_KEY)}
        if env.get("RTDS_PARTITIONS"):
            raw["partitions"] = int(env["RTDS_PARTITIONS"])
        main = _source({k: v for k, v in raw.items() if v is not None}, "RTDS_* settings")
        compliance = _source({**{k: v for k, v in raw.items() if v is not None and k != "partitions"},
                              "name": "compliance", "kind": "compliance"}, "RTDS_* settings")
        sources = [*main, *compliance]
        if env.get("RTDS_WEBHOOK_SOURCE"):  # one webhook source by name, e.g. for `make run`
            sources.extend(_source({"name": env["RTDS_WEBHOOK_SOURCE"], "kind": "webhook"},
                                   "RTDS_WEBHOOK_SOURCE"))
    if not sources:
        raise SettingsError("no sources configured")
    names = [s.key for s in sources]
    if len(set(names)) != len(names):
        raise SettingsError(f"source names must be unique: {names}")
    d = Settings()  # the defaults
    return Settings(
        lake_url=_absolute(env.get("RTDS_LAKE_URL", d.lake_url)),
        warehouse_path=os.path.abspath(env.get("RTDS_WAREHOUSE", d.warehouse_path)),
        sources=tuple(sources),
        window_seconds=float(env.get("RTDS_WINDOW_SECONDS", d.window_seconds)),
        window_max_events=int(env.get("RTDS_WINDOW_MAX_EVENTS", d.window_max_events)),
        window_max_bytes=int(env.get("RTDS_WINDOW_MAX_BYTES", d.window_max_bytes)),
        idle_timeout=float(env.get("RTDS_IDLE_TIMEOUT", d.idle_timeout)),
        duckdb_memory_limit=env.get("RTDS_DUCKDB_MEMORY_LIMIT", d.duckdb_memory_limit),
        hot_hours=_hours(env.get("RTDS_HOT_HOURS"), d.hot_hours, "RTDS_HOT_HOURS"),
        tick_seconds=int(env.get("RTDS_TICK_SECONDS", d.tick_seconds)),
        read_run_seconds=float(env.get("RTDS_READ_RUN_SECONDS", d.read_run_seconds)),
        marts_seconds=int(env.get("RTDS_MARTS_SECONDS", d.marts_seconds)),
        first_day=_day(env.get("RTDS_FIRST_DAY") or d.first_day, "RTDS_FIRST_DAY"),
        max_line_bytes=int(env.get("RTDS_MAX_LINE_BYTES", d.max_line_bytes)),
        backoff_402_seconds=float(env.get("RTDS_BACKOFF_402_SECONDS", d.backoff_402_seconds)),
        store_retry_seconds=float(env.get("RTDS_STORE_RETRY_SECONDS", d.store_retry_seconds)),
        compact_max_files=int(env.get("RTDS_COMPACT_MAX_FILES", d.compact_max_files)),
        compact_settle_days=int(env.get("RTDS_COMPACT_SETTLE_DAYS", d.compact_settle_days)),
        superseded_retention_hours=float(env.get("RTDS_SUPERSEDED_RETENTION_HOURS",
                                                 d.superseded_retention_hours)),
        orphan_grace_hours=float(env.get("RTDS_ORPHAN_GRACE_HOURS", d.orphan_grace_hours)),
        compact_min_age_hours=float(env.get("RTDS_COMPACT_MIN_AGE_HOURS", d.compact_min_age_hours)),
        housekeeping_cron=env.get("RTDS_HOUSEKEEPING_CRON", d.housekeeping_cron),
        dagster_history_days=float(env.get("RTDS_DAGSTER_HISTORY_DAYS", d.dagster_history_days)),
    )
