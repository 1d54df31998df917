"""Serving the receiver with Uvicorn: HTTP/1.1 (httptools, uvloop), HTTPS (TLS ≥ 1.2) when given
a certificate and key, and a deadline for request heads, which Uvicorn itself does not have."""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
from collections.abc import Callable

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from rtds_pipeline.extract.webhook.app import create_app
from rtds_pipeline.extract.webhook.config import WebhookConfig
from rtds_pipeline.lake.storage import Lake

log = logging.getLogger("rtds_pipeline.extract.webhook")


def head_timeout_protocol(seconds: float) -> type[HttpToolsProtocol]:
    """Uvicorn's httptools protocol, closing a connection whose request line and headers do not
    arrive within `seconds` (a client that connects and stalls, or trickles its headers, would
    otherwise hold the connection forever). Bodies have their own deadline in the app."""

    class HeadTimeoutProtocol(HttpToolsProtocol):
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_head_timer()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm_head_timer()

        def on_headers_complete(self) -> None:
            self._cancel_head_timer()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_head_timer()
            super().connection_lost(exc)

        def _arm_head_timer(self) -> None:
            self._cancel_head_timer()
            self._head_timer = self.loop.call_later(seconds, self._head_timed_out)

        def _cancel_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if not self.transport.is_closing():
                self.transport.close()

    return HeadTimeoutProtocol


def _tls_context(config: uvicorn.Config, default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    context = default()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def serve(lake: Lake, source_key: str, config: WebhookConfig, host: str, port: int) -> int:
    """Run the receiver for one webhook source until SIGINT/SIGTERM (exit 0) or a fatal error
    such as another receiver owning the source (exit 1). One process: a source has one writer."""
    fatal: list[BaseException] = []
    server: uvicorn.Server | None = None

    def stop(exc: BaseException) -> None:
        fatal.append(exc)
        if server is not None:
            server.should_exit = True

    app = create_app(lake, source_key, config, on_fatal=stop)
    tls = bool(config.tls_cert)
    uconfig = uvicorn.Config(
        app, host=host, port=port, http=head_timeout_protocol(config.head_timeout),
        loop="uvloop", lifespan="on", workers=1, access_log=False, log_config=None,
        timeout_keep_alive=math.ceil(config.keepalive_timeout), limit_concurrency=config.max_connections,
        timeout_graceful_shutdown=math.ceil(config.ack_timeout) + 5, server_header=False,
        ssl_certfile=config.tls_cert if tls else None, ssl_keyfile=config.tls_key if tls else None,
        ssl_keyfile_password=config.tls_key_password,
        ssl_context_factory=_tls_context if tls else None)
    server = uvicorn.Server(uconfig)
    server.run()
    if fatal:
        log.critical("the receiver stopped: %s", fatal[0])
        return 1
    return 0 if server.started else 1
