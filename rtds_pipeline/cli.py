"""The `rtds-pipeline` command line."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from rtds_pipeline.testserver.config import (
    DEFAULT_ACCESS_TOKEN,
    DEFAULT_APP_KEY,
    DEFAULT_MASTER_SECRET,
    ConfigError,
    load_config,
)


def _testserver(args: argparse.Namespace) -> int:
    from rtds_pipeline.testserver.app import ServerOptions, TestServer
    from rtds_pipeline.testserver.log import Quirks

    try:
        config = load_config(args.config)
    except (ConfigError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cache = Path(os.environ.get("RTDS_CACHE_DIR", Path.home() / ".cache" / "rtds_pipeline"))
    options = ServerOptions(host=args.host, port=args.port, seed=args.seed, rate=args.rate,
                            backlog=args.backlog, quirks=Quirks() if args.quirks else Quirks.none(),
                            cache_dir=cache if args.backlog >= 100_000 else None)
    server = TestServer(options, config)
    if args.backlog:
        print(f"building a backlog of {args.backlog:,} events (seed {args.seed}) …", flush=True)
    server.build_backlog()
    app = config.default_app
    token = next(iter(app.tokens), DEFAULT_ACCESS_TOKEN)
    print(f"RTDS test server on http://{args.host}:{args.port}\n"
          f"  events:     POST /api/events          Authorization: Bearer {token}   "
          f"X-UA-Appkey: {app.app_key}\n"
          f"  compliance: POST /api/events/general  basic {app.app_key}:{app.master_secret}\n"
          f"  public test credential (basic): sample_connection:sample_connection\n"
          f"  live rate {args.rate:g} events/s, backlog {len(server.log()):,} events; "
          f"admin: /admin/stats, /admin/faults, /admin/ground-truth", flush=True)
    try:
        asyncio.run(server.serve())
    except KeyboardInterrupt:
        pass
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rtds-pipeline",
        description="Airship RTDS stream → Parquet landing → DuckDB warehouse, on Dagster.")
    sub = parser.add_subparsers(dest="command", required=True)

    ts = sub.add_parser("testserver", help="run the built-in RTDS-compatible test server")
    ts.add_argument("--host", default="127.0.0.1")
    ts.add_argument("--port", type=int, default=8717)
    ts.add_argument("--seed", type=int, default=0, help="generator seed (same seed, same data)")
    ts.add_argument("--rate", type=float, default=0.0, help="live events per second")
    ts.add_argument("--backlog", type=int, default=0,
                    help="events retained before the server starts, served from EARLIEST")
    ts.add_argument("--config", type=Path, help=f"apps/tokens/behaviour (JSON or TOML); default: "
                    f"app {DEFAULT_APP_KEY}, token {DEFAULT_ACCESS_TOKEN}, "
                    f"master secret {DEFAULT_MASTER_SECRET}")
    ts.add_argument("--no-quirks", dest="quirks", action="store_false",
                    help="no duplicates, late or skewed events, unknown types or fields")
    ts.set_defaults(func=_testserver)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
