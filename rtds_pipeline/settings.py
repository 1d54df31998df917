"""One settings object: environment variables with an `RTDS_` prefix, plus an optional sources
file (TOML) for several sources. With nothing set, everything points at the built-in test
server and local folders, so `make run` works as written.

Secrets are never values in files: a source names the environment variable that holds its token
or master secret (`token_env`, `secret_env`).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from rtds_pipeline.rtds.events import BASE_URLS
from rtds_pipeline.rtds.request import RequestError, StreamRequest
from rtds_pipeline.stream.connection import Endpoint

DEFAULT_BASE_URL = "http://127.0.0.1:8717"
DEFAULT_APP_KEY = "test-app-key"
# The built-in test server's public credentials; used only when nothing is configured.
TEST_SERVER_TOKEN = "test-access-token"
TEST_SERVER_MASTER_SECRET = "test-master-secret"


class SettingsError(ValueError):
    """A setting is missing or wrong; the message names it and how to fix it."""


@dataclasses.dataclass(frozen=True)
class SourceConfig:
    name: str
    kind: str = "events"  # or "compliance" (/api/events/general), or "webhook" (Airship POSTs)
    base_url: str = DEFAULT_BASE_URL
    app_key: str = DEFAULT_APP_KEY
    token_env: str = "RTDS_ACCESS_TOKEN"
    secret_env: str = "RTDS_MASTER_SECRET"
    start: str = "EARLIEST"  # where a source with no commit begins
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
                TEST_SERVER_MASTER_SECRET if is_test_server else None)
            if not secret:
                raise SettingsError(f"source {self.name!r}: set the master secret in ${self.secret_env}")
            return Endpoint(self.base_url, self.app_key, master_secret=secret, compliance=True)
        token = os.environ.get(self.token_env) or (TEST_SERVER_TOKEN if is_test_server else None)
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
    window_seconds: float = 40.0
    window_max_events: int = 2_000_000
    window_max_bytes: int = 2 << 30
    idle_timeout: float = 90.0
    duckdb_memory_limit: str = "2GB"  # of the warehouse writer
    tick_seconds: int = 15  # between two sensor ticks, and a caught-up reader's windows
    read_run_seconds: float = 600.0  # how long one reading run reads windows
    marts_seconds: int = 60  # minimum interval between two marts refreshes
    first_day: str | None = None  # first daily partition; default: 100 days ago (RTDS keeps ≤ 90)
    max_line_bytes: int = 4 << 20  # a longer stream line is dead-lettered (prefix + length)
    backoff_402_seconds: float = 30.0  # wait after HTTP 402; Airship asks for at least 30 s
    store_retry_seconds: float = 60.0  # how long object-store failures are retried
    # Lake lifecycle (rtds_pipeline/lake/compaction.py): files per settled day, days to settle,
    # hours superseded files are kept, grace before unlisted files count as orphans.
    compact_max_files: int = 4
    compact_settle_days: int = 1
    superseded_retention_hours: float = 6.0
    orphan_grace_hours: float = 1.0
    compact_min_age_hours: float = 1.0  # files younger than this wait for the next compaction
    housekeeping_cron: str = "7-59/15 * * * *"

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
    return DEFAULT_BASE_URL


def _source(raw: dict[str, Any], where: str) -> list[SourceConfig]:
    known = {f.name for f in dataclasses.fields(SourceConfig)} | {"region", "partitions"}
    unknown = set(raw) - known
    if unknown:
        raise SettingsError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    if "name" not in raw:
        raise SettingsError(f"{where}: every source needs a name")
    base = SourceConfig(
        name=raw["name"], kind=raw.get("kind", "events"), base_url=_base_url(raw, where),
        app_key=raw.get("app_key", DEFAULT_APP_KEY),
        token_env=raw.get("token_env", "RTDS_ACCESS_TOKEN"),
        secret_env=raw.get("secret_env", "RTDS_MASTER_SECRET"),
        start=raw.get("start", "EARLIEST"), filters=tuple(raw.get("filters", ())),
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
    if base.start not in ("EARLIEST", "LATEST"):
        raise SettingsError(f"{where}: start must be EARLIEST or LATEST")
    # `partitions = N` is shorthand for N readers, one per PARTITION subset.
    n = raw.get("partitions")
    out = ([dataclasses.replace(base, subset={"type": "PARTITION", "count": n, "selection": i})
            for i in range(n)] if n else [base])
    for s in out:
        s.request()
    return out


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
               "app_key": env.get("RTDS_APP_KEY", DEFAULT_APP_KEY)}
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
    return Settings(
        lake_url=_absolute(env.get("RTDS_LAKE_URL", "data/lake")),
        warehouse_path=os.path.abspath(env.get("RTDS_WAREHOUSE", "data/warehouse.duckdb")),
        sources=tuple(sources),
        window_seconds=float(env.get("RTDS_WINDOW_SECONDS", 40)),
        window_max_events=int(env.get("RTDS_WINDOW_MAX_EVENTS", 2_000_000)),
        window_max_bytes=int(env.get("RTDS_WINDOW_MAX_BYTES", 2 << 30)),
        idle_timeout=float(env.get("RTDS_IDLE_TIMEOUT", 90)),
        duckdb_memory_limit=env.get("RTDS_DUCKDB_MEMORY_LIMIT", "2GB"),
        tick_seconds=int(env.get("RTDS_TICK_SECONDS", 15)),
        read_run_seconds=float(env.get("RTDS_READ_RUN_SECONDS", 600)),
        marts_seconds=int(env.get("RTDS_MARTS_SECONDS", 60)),
        first_day=env.get("RTDS_FIRST_DAY") or None,
        max_line_bytes=int(env.get("RTDS_MAX_LINE_BYTES", 4 << 20)),
        backoff_402_seconds=float(env.get("RTDS_BACKOFF_402_SECONDS", 30)),
        store_retry_seconds=float(env.get("RTDS_STORE_RETRY_SECONDS", 60)),
        compact_max_files=int(env.get("RTDS_COMPACT_MAX_FILES", 4)),
        compact_settle_days=int(env.get("RTDS_COMPACT_SETTLE_DAYS", 1)),
        superseded_retention_hours=float(env.get("RTDS_SUPERSEDED_RETENTION_HOURS", 6)),
        orphan_grace_hours=float(env.get("RTDS_ORPHAN_GRACE_HOURS", 1)),
        compact_min_age_hours=float(env.get("RTDS_COMPACT_MIN_AGE_HOURS", 1)),
        housekeeping_cron=env.get("RTDS_HOUSEKEEPING_CRON", "7-59/15 * * * *"),
    )
