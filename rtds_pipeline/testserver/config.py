"""Test-server configuration: apps, integrations, tokens, behaviour switches and faults.

With no file there is one built-in app that every default of the project points at. A config
file (JSON or TOML) lists apps like this:

    {"apps": [{"app_key": "k", "master_secret": "s", "max_streams": 4,
               "integrations": [{"name": "warehouse",
                                 "tokens": [{"token": "t1"},
                                            {"token": "t2", "types": ["SEND", "OPEN"]}]}]}],
     "redirect": "stale", "keepalive_seconds": 2.0}
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path
from typing import Any

from rtds_pipeline.protocol.loopback import TEST_ACCESS_TOKEN, TEST_APP_KEY, TEST_MASTER_SECRET

# Airship's public test-server credential (basic auth), accepted on /api/events.
SAMPLE_CREDENTIAL = ("sample_connection", "sample_connection")
MAX_TOKENS_PER_INTEGRATION = 25
REDIRECT_MODES = ("never", "missing", "stale", "always")
EXPIRED_OFFSET_MODES = ("earliest", "error")


class ConfigError(ValueError):
    """The test-server configuration is invalid; the message says where."""


@dataclasses.dataclass
class Token:
    token: str
    types: frozenset[str] | None = None  # None: entitled to every type
    revoked: bool = False


@dataclasses.dataclass
class App:
    app_key: str
    master_secret: str
    tokens: dict[str, Token]
    max_streams: int = 4
    active_streams: int = 0


@dataclasses.dataclass
class ServerConfig:
    apps: dict[str, App]
    # 307 session pinning: never; when the cookie is missing; when missing or stale; always
    # (an endless loop, for testing a client's redirect cap).
    redirect: str = "never"
    redirect_location: bool = False
    keepalive_seconds: float = 2.0
    expired_offset: str = "earliest"
    strict: bool = False

    @property
    def default_app(self) -> App:
        return next(iter(self.apps.values()))


def default_config() -> ServerConfig:
    app = App(TEST_APP_KEY, TEST_MASTER_SECRET, {TEST_ACCESS_TOKEN: Token(TEST_ACCESS_TOKEN)})
    return ServerConfig({app.app_key: app})


def load_config(path: Path | None) -> ServerConfig:
    if path is None:
        return default_config()
    text = path.read_text()
    try:
        raw = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: cannot parse: {exc}") from None
    return config_from_dict(raw, where=str(path))


def config_from_dict(raw: dict[str, Any], where: str = "config") -> ServerConfig:
    apps: dict[str, App] = {}
    for i, a in enumerate(raw.get("apps") or []):
        at = f"{where}: apps[{i}]"
        if "app_key" not in a or "master_secret" not in a:
            raise ConfigError(f"{at} needs app_key and master_secret")
        tokens: dict[str, Token] = {}
        for integ in a.get("integrations") or []:
            toks = integ.get("tokens") or []
            if len(toks) > MAX_TOKENS_PER_INTEGRATION:
                raise ConfigError(f"{at}: integration {integ.get('name')!r} has {len(toks)} tokens;"
                                  f" Airship allows at most {MAX_TOKENS_PER_INTEGRATION}")
            for t in toks:
                types = t.get("types")
                tokens[t["token"]] = Token(t["token"], frozenset(types) if types else None)
        apps[a["app_key"]] = App(a["app_key"], a["master_secret"], tokens,
                                 int(a.get("max_streams", 4)))
    if not apps:
        apps = default_config().apps
    cfg = ServerConfig(apps)
    for key in ("redirect", "redirect_location", "keepalive_seconds", "expired_offset", "strict"):
        if key in raw:
            setattr(cfg, key, raw[key])
    if cfg.redirect not in REDIRECT_MODES:
        raise ConfigError(f"{where}: redirect must be one of {', '.join(REDIRECT_MODES)}")
    if cfg.expired_offset not in EXPIRED_OFFSET_MODES:
        raise ConfigError(f"{where}: expired_offset must be one of {', '.join(EXPIRED_OFFSET_MODES)}")
    return cfg


FAULT_KINDS = ("eof", "reset", "cut_line", "stall", "malformed", "status")


@dataclasses.dataclass
class Fault:
    """One armed fault. Stream faults fire `after` events into a stream; `status` answers
    requests with `status` instead of streaming. `times` streams/requests are affected."""

    kind: str
    after: int = 0
    times: int = 1
    status: int = 503
    seconds: float = 120.0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Fault:
        if d.get("kind") not in FAULT_KINDS:
            raise ConfigError(f"fault kind must be one of {', '.join(FAULT_KINDS)}, got {d.get('kind')!r}")
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"unknown fault field(s): {', '.join(sorted(unknown))}")
        return cls(**d)


class Faults:
    """Faults armed on the server (admin endpoint or tests); each fires `times` times."""

    def __init__(self) -> None:
        self.armed: list[Fault] = []

    def arm(self, fault: Fault) -> None:
        self.armed.append(fault)

    def clear(self) -> None:
        self.armed.clear()

    def take(self, *, status: bool) -> Fault | None:
        for f in self.armed:
            if (f.kind == "status") == status:
                f.times -= 1
                if f.times <= 0:
                    self.armed.remove(f)
                return f
        return None
