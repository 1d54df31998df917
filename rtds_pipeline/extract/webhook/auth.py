"""Who may POST: HTTP Basic and/or required header values, compared in constant time."""

from __future__ import annotations

import base64
import binascii
import hmac

from rtds_pipeline.extract.webhook.config import WebhookConfig


class Authenticator:
    def __init__(self, config: WebhookConfig) -> None:
        self._basic = (f"{config.basic[0]}:{config.basic[1]}".encode()
                       if config.basic else None)
        self._headers = [(name.lower().encode("latin-1"), value.encode("latin-1"))
                         for name, value in config.headers]
        self.challenge = 'Basic realm="rtds-webhook", charset="UTF-8"' if config.basic else None

    def check(self, headers: list[tuple[bytes, bytes]]) -> str | None:
        """None if the request may pass, else what was wrong (no secret in it).

        Every configured check is evaluated whatever the others give, each with
        `hmac.compare_digest`, so the time taken says nothing about which value was close."""
        given: dict[bytes, bytes] = {}
        for name, value in headers:  # ASGI: lower-case names
            given.setdefault(name, value)
        problems = []
        if self._basic is not None:
            ok = hmac.compare_digest(_basic_credentials(given.get(b"authorization", b"")),
                                     self._basic)
            if not ok:
                problems.append("missing or wrong basic credentials")
        for name, expected in self._headers:
            if not hmac.compare_digest(given.get(name, b"").strip(), expected):
                problems.append(f"missing or wrong value of header {name.decode()}")
        return "; ".join(problems) or None


def _basic_credentials(header: bytes) -> bytes:
    scheme, _, encoded = header.strip().partition(b" ")
    if scheme.lower() != b"basic":
        return b""
    try:
        return base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return b""
