"""The `rtds-pipeline` command line."""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from rtds_pipeline.protocol.loopback import (
    TEST_ACCESS_TOKEN,
    TEST_APP_KEY,
    TEST_MASTER_SECRET,
    TEST_SERVER_PORT,
)

if TYPE_CHECKING:
    from rtds_pipeline.extract.reader import WindowStats
    from rtds_pipeline.testserver.webhook_sender import WebhookOptions


def _testserver(args: argparse.Namespace) -> int:
    # The test server is imported only here: the product's other commands never load it.
    from rtds_pipeline.testserver.app import ServerOptions, TestServer
    from rtds_pipeline.testserver.config import ConfigError, load_config
    from rtds_pipeline.testserver.log import Quirks

    try:
        config = load_config(args.config)
    except (ConfigError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cache = Path(os.environ.get("RTDS_CACHE_DIR", Path.home() / ".cache" / "rtds_pipeline"))
    options = ServerOptions(host=args.host, port=args.port, seed=args.seed, rate=args.rate,
                            backlog=args.backlog, quirks=Quirks() if args.quirks else Quirks.none(),
                            cache_dir=cache if args.backlog >= 100_000 else None,
                            state_dir=args.state_dir, retention_events=args.retention_events)
    server = TestServer(options, config)
    try:
        webhook = _webhook_options(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if webhook:
        server.send_webhooks(webhook)
    if server.restored:
        print(f"restored the streams saved in {args.state_dir} "
              f"({len(server.log()):,} events retained)", flush=True)
    elif args.backlog:
        print(f"building a backlog of {args.backlog:,} events (seed {args.seed}) …", flush=True)
    server.build_backlog()
    app = config.default_app
    token = next(iter(app.tokens), TEST_ACCESS_TOKEN)
    print(f"RTDS test server on http://{args.host}:{args.port}\n"
          f"  events:     POST /api/events          Authorization: Bearer {token}   "
          f"X-UA-Appkey: {app.app_key}\n"
          f"  compliance: POST /api/events/general  basic {app.app_key}:{app.master_secret}\n"
          f"  public test credential (basic): sample_connection:sample_connection\n"
          f"  live rate {args.rate:g} events/s, backlog {len(server.log()):,} events; "
          f"admin: /admin/stats, /admin/faults, /admin/ground-truth", flush=True)
    if webhook:
        print(f"  webhook:    POSTs batches of {webhook.batch} to {webhook.url.split('?')[0]} "
              f"({webhook.concurrency} in flight); /admin/webhook", flush=True)
    # Ctrl-C or SIGTERM (how `make run` stops it) ends serving cleanly: the streams are saved
    # to --state-dir on the way out, so the next start goes on where this one stopped.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: server.request_stop())
    asyncio.run(server.serve())
    return 0


def _ingest(args: argparse.Namespace) -> int:
    """Every failure ends in one line on stderr saying what and what to do, and exit 1 (2 for
    settings); never a traceback (RTDS_DEBUG=1 adds it)."""
    from rtds_pipeline.extract.errors import RtdsStreamError
    from rtds_pipeline.lake.retry import ObjectStoreUnavailable
    from rtds_pipeline.settings import SettingsError

    # Ctrl-C, or SIGTERM from a process manager, ends the window in flight uncommitted (it is read
    # again) and prints the summary — also when started in the background (`cmd &`), where the
    # shell hands it SIGINT ignored.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.default_int_handler)
    try:
        return _ingest_windows(args)
    except KeyboardInterrupt:  # before the first window started (e.g. while importing)
        return 130
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (RtdsStreamError, ObjectStoreUnavailable, FileExistsError) as exc:
        # FileExistsError: another writer committed this window first (one writer per source).
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 — the last line of defence: a message, not a traceback
        if os.environ.get("RTDS_DEBUG"):
            import traceback
            traceback.print_exc()
        print(f"error: ingest failed unexpectedly: {type(exc).__name__}: {exc}. Nothing of the "
              "failed window was committed; its events will be read again. Run again; if it "
              "repeats, set RTDS_DEBUG=1 for the traceback and report it.", file=sys.stderr)
        return 1


def _ingest_windows(args: argparse.Namespace) -> int:
    from rtds_pipeline.extract.ingest import limits_from, read_windows
    from rtds_pipeline.lake.retry import StoreRetry
    from rtds_pipeline.lake.storage import open_lake
    from rtds_pipeline.settings import load_settings

    settings = load_settings()
    source = settings.source(args.source)
    store_retry = StoreRetry(settings.store_retry_seconds)
    lake = store_retry.call(f"open the lake {settings.lake_url}", lambda: open_lake(settings.lake_url))
    override = {"max_seconds": args.max_seconds} if args.max_seconds else {}
    if args.follow:
        override["stop_when_caught_up"] = False
    limits = limits_from(settings, **override)
    totals = {"windows": 0, "events": 0, "bytes": 0, "dead": 0}
    t0 = time.monotonic()
    live = sys.stdout.isatty()
    window = 0
    last_plain = [0.0]

    def progress(stats: WindowStats, seconds: float) -> None:
        """Live: one line rewritten every second on a terminal, a line every 10 s otherwise."""
        if not live and time.monotonic() - last_plain[0] < 10:
            return
        last_plain[0] = time.monotonic()
        line = _window_line(window, stats, seconds) + " …"
        print("\r" + line if live else line, end="" if live else "\n", flush=True)

    windows = read_windows(source, lake, limits, seconds=math.inf, caught_up_pause_s=0.0,
                           store_retry=store_retry, progress=progress,
                           orphan_grace_s=settings.orphan_grace_hours * 3600)
    try:
        while args.follow or window < args.windows:
            window += 1
            out = next(windows)
            totals["windows"] += 1
            totals["events"] += out.stats.events
            totals["bytes"] += out.stats.bytes
            totals["dead"] += out.stats.dead_letters
            line = f"{_window_line(window, out.stats, out.seconds)} — {out.stats.stop_reason}"
            print(("\r\033[K" if live else "") + line, flush=True)
    except KeyboardInterrupt:
        pass
    took = time.monotonic() - t0
    print(f"summary: {totals['windows']} windows, {totals['events']:,} events, "
          f"{totals['bytes'] / 1e6:,.1f} MB in {took:,.1f} s "
          f"({totals['events'] / took if took else 0:,.0f} events/s), "
          f"{totals['dead']} dead letters; lake {lake.url}")
    return 0


def _window_line(window: int, stats: WindowStats, seconds: float) -> str:
    return (f"window {window}: {stats.events:,} events, {stats.bytes / 1e6:,.1f} MB, "
            f"{stats.events / seconds if seconds else 0:,.0f} events/s, "
            f"lag {_lag_ms(stats.max_processed_ms)}, {stats.dead_letters} dead letters, "
            f"{stats.reconnects} reconnects")


def _lag(max_processed: str | None) -> str:
    from rtds_pipeline.protocol.timestamps import parse_iso_ms
    return _lag_ms(parse_iso_ms(max_processed) if max_processed else None)


def _lag_ms(max_processed_ms: int | None) -> str:
    if not max_processed_ms:
        return "n/a"
    from rtds_pipeline.protocol.timestamps import now_ms
    return f"{(now_ms() - max_processed_ms) / 1000:,.0f} s"


def _lake_status(args: argparse.Namespace) -> int:
    from rtds_pipeline.lake.commits import CommitLog
    from rtds_pipeline.lake.live import load_state
    from rtds_pipeline.lake.storage import open_lake
    from rtds_pipeline.settings import load_settings

    settings = load_settings()
    lake = open_lake(settings.lake_url)
    print(f"lake {lake.url}")
    for source in settings.sources:
        state = load_state(CommitLog(lake, source.key))
        if not state.seq:
            print(f"  {source.key}: nothing committed yet")
            continue
        last = CommitLog(lake, source.key).read(state.seq)
        live = state.files()
        rows = sum(f.rows for f in live)
        dead = sum(f.rows for f in state.dead_letters.values())
        days = sorted({f.day for f in live})
        print(f"  {source.key}: offset {last.resume_offset}, {state.seq} commits, {len(live)} files, "
              f"{rows:,} rows, days {days[0] if days else '-'}..{days[-1] if days else '-'}, "
              f"lag {_lag(last.max_processed)}, {dead} dead letters")
    return 0


def _lake_reset_offset(args: argparse.Namespace) -> int:
    """Move a source's position with a commit (listing no files): the repair for a resume offset
    RTDS refuses (HTTP 400), e.g. one that expired past retention."""
    from rtds_pipeline.extract.ingest import publish, reset_commit
    from rtds_pipeline.lake.commits import CommitLog
    from rtds_pipeline.lake.retry import ObjectStoreUnavailable, StoreRetry
    from rtds_pipeline.lake.storage import open_lake
    from rtds_pipeline.protocol.request import STARTS
    from rtds_pipeline.settings import SettingsError, load_settings

    to = args.to.upper() if args.to.upper() in STARTS else args.to
    try:
        settings = load_settings()
        source = settings.source(args.source)
        retry = StoreRetry(settings.store_retry_seconds)
        log = CommitLog(retry.call("open the lake", lambda: open_lake(settings.lake_url)), source.key)
        commit = retry.call(f"read the commit log of {source.key}", lambda: reset_commit(log, to))
        publish(log, commit, retry)
    except (SettingsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (ObjectStoreUnavailable, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    where = f"after offset {to}" if commit.resume_offset else f"at {to}"
    print(f"{source.key}: commit {commit.window_seq} moves the position from "
          f"{commit.previous_offset or 'the start setting'} to {where}; the next window reads from there")
    return 0


def _lake_sources(args: argparse.Namespace):
    """(settings, lake, the sources `--source` names or all), or None after printing why not."""
    from rtds_pipeline.lake.storage import open_lake
    from rtds_pipeline.settings import SettingsError, load_settings

    try:
        settings = load_settings()
        sources = [settings.source(args.source)] if args.source else list(settings.sources)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    return settings, open_lake(settings.lake_url), sources


def _lake_files(args: argparse.Namespace) -> int:
    """The committed view: live files only (never orphans, never superseded files)."""
    from rtds_pipeline.lake.live import live_files

    chosen = _lake_sources(args)
    if chosen is None:
        return 2
    settings, lake, sources = chosen
    urls = [lake.url_of(f.path) for s in sources for f in live_files(lake, s.key, args.day or None)]
    if args.duckdb:
        listed = ", ".join("'" + u.replace("'", "''") + "'" for u in urls)
        print(f"CREATE OR REPLACE VIEW landing AS SELECT * FROM read_parquet([{listed}], "
              "hive_partitioning = true);" if urls else
              "-- nothing committed yet", flush=True)
    else:
        print("\n".join(urls), flush=True)
    return 0


def _lake_compact(args: argparse.Namespace) -> int:
    """Housekeeping on demand: what the Dagster job `lake_housekeeping` does on its schedule."""
    from rtds_pipeline.lake.compaction import housekeep

    chosen = _lake_sources(args)
    if chosen is None:
        return 2
    settings, lake, sources = chosen
    for source in sources:
        done = housekeep(lake, source.key, **settings.lake_housekeeping())
        for d in done.compacted:
            print(f"  {source.key} {d.day}: {d.files_before} files -> {d.files_after} "
                  f"({d.bytes_before / 1e6:,.1f} MB -> {d.bytes_after / 1e6:,.1f} MB, "
                  f"record {d.seq})")
        print(f"{source.key}: {len(done.compacted)} day(s) compacted, "
              f"{len(done.superseded_deleted)} superseded file(s) deleted, "
              f"{len(done.orphans_deleted)} orphan(s) deleted; {done.live_files} live files in "
              f"{done.days} day(s), at most {done.max_files_per_settled_day} per settled day",
              flush=True)
    return 0
    return 0


def _sql(args: argparse.Namespace) -> int:
    import csv

    import duckdb

    from rtds_pipeline.lake.storage import open_lake
    from rtds_pipeline.settings import load_settings
    from rtds_pipeline.warehouse.store import Warehouse

    query = args.query if args.query != "-" else sys.stdin.read()
    settings = load_settings()
    try:
        con = Warehouse(args.warehouse or settings.warehouse_path,
                        open_lake(settings.lake_url)).reader()
    except FileNotFoundError as exc:
        print(f"rtds-pipeline sql: {exc}", file=sys.stderr)
        return 1
    try:
        rel = con.sql(query)
    except duckdb.Error as exc:
        print(f"rtds-pipeline sql: the query failed: {exc}", file=sys.stderr)
        return 1
    if rel is None:
        return 0
    if args.csv:
        out = csv.writer(sys.stdout)
        out.writerow(rel.columns)
        out.writerows(rel.fetchall())
    else:
        rel.show(max_rows=args.max_rows, max_width=10_000)
    return 0


def _webhook_options(args: argparse.Namespace) -> WebhookOptions | None:
    """The test server's Airship-style webhook sender, from `--webhook-*` flags."""
    from rtds_pipeline.testserver.webhook_sender import WebhookOptions, parse_header

    if not args.webhook_url:
        return None
    basic = None
    if args.webhook_basic:
        user, sep, password = args.webhook_basic.partition(":")
        if not sep:
            raise ValueError("--webhook-basic must be user:password")
        basic = (user, password)
    types = (frozenset(t.strip().upper() for t in args.webhook_types.split(",") if t.strip())
             if args.webhook_types else None)
    return WebhookOptions(url=args.webhook_url, batch=args.webhook_batch,
                          headers=tuple(parse_header(h) for h in args.webhook_header),
                          basic=basic, types=types, concurrency=args.webhook_concurrency,
                          ca_file=args.webhook_ca)


def _webhook(args: argparse.Namespace) -> int:
    import logging

    from rtds_pipeline.allocator import return_memory_promptly
    from rtds_pipeline.extract.webhook.config import load_webhook_config
    from rtds_pipeline.extract.webhook.server import serve
    from rtds_pipeline.lake.storage import open_lake
    from rtds_pipeline.settings import SettingsError, load_settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings()
        hooks = [s for s in settings.sources if s.webhook]
        if args.source:
            source = settings.source(args.source)
            if not source.webhook:
                raise SettingsError(f"source {args.source!r} is of kind {source.kind!r}, not "
                                    "'webhook'")
        elif hooks:
            source = hooks[0]
        else:
            raise SettingsError("no webhook source is configured: add `[[sources]] name = \"…\" "
                                "kind = \"webhook\"` to RTDS_SOURCES_FILE, or set "
                                "RTDS_WEBHOOK_SOURCE=NAME")
        override = {k: v for k, v in (("tls_cert", args.tls_cert), ("tls_key", args.tls_key),
                                      ("path", args.path)) if v}
        config = load_webhook_config(**override)
        config.check_exposure(args.host)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return_memory_promptly()
    scheme = "https" if config.tls_cert else "http"
    print(f"webhook receiver for source {source.key!r}: POST "
          f"{scheme}://{args.host}:{args.port}{config.path} → {settings.lake_url}", flush=True)
    return serve(open_lake(settings.lake_url), source.key, config, args.host, args.port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rtds-pipeline",
        description="Airship RTDS stream → Parquet landing → DuckDB warehouse, on Dagster.")
    sub = parser.add_subparsers(dest="command", required=True)

    ts = sub.add_parser("testserver", help="run the built-in RTDS-compatible test server")
    ts.add_argument("--host", default="127.0.0.1")
    ts.add_argument("--port", type=int, default=TEST_SERVER_PORT)
    ts.add_argument("--seed", type=int, default=0, help="generator seed (same seed, same data)")
    ts.add_argument("--rate", type=float, default=0.0, help="live events per second")
    ts.add_argument("--backlog", type=int, default=0,
                    help="events retained before the server starts, served from EARLIEST")
    ts.add_argument("--config", type=Path, help=f"apps/tokens/behaviour (JSON or TOML); default: "
                    f"app {TEST_APP_KEY}, token {TEST_ACCESS_TOKEN}, "
                    f"master secret {TEST_MASTER_SECRET}")
    ts.add_argument("--retention-events", type=int,
                    help="events kept per app (default: RTDS's 7 days); memory ~150 B per event")
    ts.add_argument("--state-dir", type=Path,
                    help="keep the streams here across restarts: a restarted server serves the "
                         "same events at the same offsets and goes on live (the backlog is "
                         "built on the first start only); `make run` uses data/testserver")
    ts.add_argument("--no-quirks", dest="quirks", action="store_false",
                    help="no duplicates, late or skewed events, unknown types or fields")
    ts.add_argument("--webhook-url", help="also POST the events to this URL, as Airship's webhook "
                    "integration does (retried until a 2xx; acked events marked in ground truth)")
    ts.add_argument("--webhook-batch", type=int, default=10, choices=(1, 5, 10, 15, 20, 30, 50, 100),
                    help="events per POST (1: a single object, else an array; default 10)")
    ts.add_argument("--webhook-header", action="append", default=[], metavar="'NAME: VALUE'",
                    help="a custom header sent with every POST (repeatable)")
    ts.add_argument("--webhook-basic", metavar="USER:PASSWORD", help="basic authorization")
    ts.add_argument("--webhook-types", metavar="T1,T2", help="send only these event types")
    ts.add_argument("--webhook-concurrency", type=int, default=8, help="POSTs in flight (default 8)")
    ts.add_argument("--webhook-ca", help="trust this CA/certificate file (a self-signed receiver)")
    ts.set_defaults(func=_testserver)

    ing = sub.add_parser("ingest", help="read stream windows and commit them to the lake")
    ing.add_argument("--source", help="source name (default: the first configured)")
    mode = ing.add_mutually_exclusive_group()
    mode.add_argument("--windows", type=int, default=1, help="number of windows (default 1)")
    mode.add_argument("--follow", action="store_true", help="read windows until interrupted")
    ing.add_argument("--max-seconds", type=float, help="cap of one window (RTDS_WINDOW_SECONDS)")
    ing.set_defaults(func=_ingest)

    wh = sub.add_parser("webhook", help="receive Airship's webhook POSTs into the lake")
    wh.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to accept other hosts (needs "
                    "RTDS_WEBHOOK_BASIC or RTDS_WEBHOOK_HEADERS)")
    wh.add_argument("--port", type=int, default=8718)
    wh.add_argument("--source", help="webhook source name (default: the first of kind webhook)")
    wh.add_argument("--path", help="the POST path (RTDS_WEBHOOK_PATH, default /webhook)")
    wh.add_argument("--tls-cert", help="certificate chain (PEM) for HTTPS (RTDS_WEBHOOK_TLS_CERT)")
    wh.add_argument("--tls-key", help="its private key (PEM) (RTDS_WEBHOOK_TLS_KEY)")
    wh.set_defaults(func=_webhook)

    lake = sub.add_parser("lake", help="inspect the landing zone")
    lake_sub = lake.add_subparsers(dest="lake_command", required=True)
    st = lake_sub.add_parser("status", help="per source: committed offset, files, rows, lag")
    st.set_defaults(func=_lake_status)
    rs = lake_sub.add_parser(
        "reset-offset", help="move a source's position (a commit): the fix for a refused resume offset")
    rs.add_argument("source", help="source name (its key, e.g. events or events-p0of4)")
    rs.add_argument("--to", required=True, metavar="OFFSET|EARLIEST|LATEST",
                    help="resume after this offset, or from the start or the end of the stream")
    rs.set_defaults(func=_lake_reset_offset)
    fl = lake_sub.add_parser("files", help="the committed landing files (what readers may read)")
    fl.add_argument("--source", help="one source (default: all)")
    fl.add_argument("--day", action="append", help="occurred day YYYY-MM-DD (repeatable)")
    fl.add_argument("--duckdb", action="store_true",
                    help="print a DuckDB statement creating a view `landing` over them")
    fl.set_defaults(func=_lake_files)
    cp = lake_sub.add_parser("compact", help="compact settled days, delete superseded files "
                             "past retention and orphans (what the housekeeping job does)")
    cp.add_argument("--source", help="one source (default: all)")
    cp.set_defaults(func=_lake_compact)

    q = sub.add_parser("sql", help="query the warehouse read-only (never blocks the pipeline)")
    q.add_argument("query", help='SQL, e.g. "select count(*) from events"; "-" reads stdin')
    q.add_argument("--warehouse", help="DuckDB file (default: RTDS_WAREHOUSE or data/warehouse.duckdb)")
    q.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    q.add_argument("--max-rows", type=int, default=40, help="rows shown in table mode")
    q.set_defaults(func=_sql)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
