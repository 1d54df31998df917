"""The receiver's settings: environment variables with an `RTDS_WEBHOOK_` prefix.

Secrets (`RTDS_WEBHOOK_BASIC`, `RTDS_WEBHOOK_HEADERS`, `RTDS_WEBHOOK_TLS_KEY_PASSWORD`) come only
from the environment and are never logged: `WebhookConfig`'s repr masks them.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from rtds_pipeline.settings import SettingsError

DEFAULT_PORT = 8718
DEFAULT_PATH = "/webhook"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclasses.dataclass(frozen=True)
class CommitPolicy:
    """When a landing window closes. Requests wait for their window's commit (their ack), so
    these bound the ack latency as well as the number of windows (files) per day."""

    max_seconds: float = 1.0  # a window closes at most this long after its first request
    quiet_seconds: float = 0.02  # … or once no request has joined it for this long
    max_events: int = 10_000  # … or once it holds this many events
    max_bytes: int = 64 << 20  # … or this many body bytes
    # Requests waiting beyond this many body bytes (windows being committed or open) get 503:
    # Airship retries later, and memory stays bounded whatever the senders do.
    max_pending_bytes: int = 256 << 20


@dataclasses.dataclass(frozen=True)
class WebhookConfig:
    path: str = DEFAULT_PATH
    basic: tuple[str, str] | None = dataclasses.field(default=None, repr=False)
    headers: tuple[tuple[str, str], ...] = dataclasses.field(default=(), repr=False)
    max_body_bytes: int = 10 << 20
    head_timeout: float = 10.0  # request line and headers must arrive within this
    body_timeout: float = 30.0  # the whole body must arrive within this
    ack_timeout: float = 30.0  # a request waits this long for its commit, then gets 503
    keepalive_timeout: float = 75.0  # idle keep-alive connections are closed after this
    max_connections: int = 4096  # beyond this uvicorn answers 503
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_key_password: str | None = dataclasses.field(default=None, repr=False)
    commit: CommitPolicy = dataclasses.field(default_factory=CommitPolicy)

    @property
    def authenticated(self) -> bool:
        return self.basic is not None or bool(self.headers)

    @property
    def secret_header_names(self) -> frozenset[str]:
        return frozenset(name.lower() for name, _ in self.headers)

    def check_exposure(self, host: str) -> None:
        """An open receiver lands anyone's events: only loopback may go without auth."""
        if not self.authenticated and host not in LOOPBACK:
            raise SettingsError(
                f"the webhook receiver would listen on {host} without authentication: set "
                "RTDS_WEBHOOK_BASIC (user:password) and/or RTDS_WEBHOOK_HEADERS "
                "('Name: value; …'), the values you enter in Airship's webhook settings")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise SettingsError("HTTPS needs both a certificate and its key: set "
                                "RTDS_WEBHOOK_TLS_CERT and RTDS_WEBHOOK_TLS_KEY (or neither)")


def parse_basic(value: str) -> tuple[str, str]:
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise SettingsError("RTDS_WEBHOOK_BASIC must be 'user:password' (both non-empty)")
    return user, password


def parse_headers(value: str) -> tuple[tuple[str, str], ...]:
    """`Name: value; Name2: value2` → ((name, value), …). Values may not contain `;`."""
    out = []
    for part in value.split(";"):
        if not part.strip():
            continue
        name, sep, val = part.partition(":")
        name, val = name.strip(), val.strip()
        if not sep or not name or not val or any(c in name for c in " \t()<>@,;:\\\"/[]?={}"):
            raise SettingsError(
                "RTDS_WEBHOOK_HEADERS must be 'Name: value' pairs separated by ';' "
                f"(a pair without a name or value, or a name with separators, near "
                f"{name[:20]!r})")
        out.append((name, val))
    names = [n.lower() for n, _ in out]
    if len(set(names)) != len(names):
        raise SettingsError("RTDS_WEBHOOK_HEADERS names a header twice")
    if "authorization" in names:
        raise SettingsError("RTDS_WEBHOOK_HEADERS cannot require Authorization: use "
                            "RTDS_WEBHOOK_BASIC for basic auth")
    return tuple(out)


def _number(env: dict[str, str], name: str, default: float, kind: type = float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a {kind.__name__}, got {raw!r}") from None
    if value <= 0:
        raise SettingsError(f"{name} must be positive, got {raw!r}")
    return value


def load_webhook_config(env: dict[str, str] | None = None, **override: Any) -> WebhookConfig:
    env = dict(os.environ if env is None else env)
    path = env.get("RTDS_WEBHOOK_PATH", DEFAULT_PATH)
    if not path.startswith("/"):
        raise SettingsError(f"RTDS_WEBHOOK_PATH must start with '/', got {path!r}")
    commit = CommitPolicy(
        max_seconds=_number(env, "RTDS_WEBHOOK_COMMIT_SECONDS", CommitPolicy.max_seconds),
        quiet_seconds=_number(env, "RTDS_WEBHOOK_COMMIT_QUIET", CommitPolicy.quiet_seconds),
        max_events=int(_number(env, "RTDS_WEBHOOK_COMMIT_EVENTS", CommitPolicy.max_events, int)),
        max_bytes=int(_number(env, "RTDS_WEBHOOK_COMMIT_BYTES", CommitPolicy.max_bytes, int)),
        max_pending_bytes=int(_number(env, "RTDS_WEBHOOK_PENDING_BYTES",
                                      CommitPolicy.max_pending_bytes, int)))
    config = WebhookConfig(
        path=path.rstrip("/") or "/",
        basic=parse_basic(env["RTDS_WEBHOOK_BASIC"]) if env.get("RTDS_WEBHOOK_BASIC") else None,
        headers=parse_headers(env.get("RTDS_WEBHOOK_HEADERS", "")),
        max_body_bytes=int(_number(env, "RTDS_WEBHOOK_MAX_BODY", WebhookConfig.max_body_bytes, int)),
        head_timeout=_number(env, "RTDS_WEBHOOK_HEAD_TIMEOUT", WebhookConfig.head_timeout),
        body_timeout=_number(env, "RTDS_WEBHOOK_BODY_TIMEOUT", WebhookConfig.body_timeout),
        ack_timeout=_number(env, "RTDS_WEBHOOK_ACK_TIMEOUT", WebhookConfig.ack_timeout),
        keepalive_timeout=_number(env, "RTDS_WEBHOOK_KEEPALIVE", WebhookConfig.keepalive_timeout),
        max_connections=int(_number(env, "RTDS_WEBHOOK_MAX_CONNECTIONS",
                                    WebhookConfig.max_connections, int)),
        tls_cert=env.get("RTDS_WEBHOOK_TLS_CERT") or None,
        tls_key=env.get("RTDS_WEBHOOK_TLS_KEY") or None,
        tls_key_password=env.get("RTDS_WEBHOOK_TLS_KEY_PASSWORD") or None,
        commit=commit)
    return dataclasses.replace(config, **override) if override else config
