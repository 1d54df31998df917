"""`python -m bench.scale [--day-sizes 250000,1000000,4000000,16000000] [--history 0] [--marts]
[--runs 3] [--window 10000] [--history-days 30]`: does one window's cost grow with the size of its
day, or with the history before it?

A configuration is a day size (events already in the window's day, DAY) and a history (events
of the `--history-days` days before it); every day size is measured with every history (both
are comma lists). Each configuration is prefilled (below), then windows of `--window` events land
into DAY (3 % of them copies of ids the day already keeps, as a real stream's duplicates; 2 %
close sessions of the history, or of DAY without one), and each window is measured:
- `window_s`: from its landing commit to its rows visible in `events` to a new reader of
  warehouse.duckdb: manifest sync, load, the load's checks, publish, and the reader's query;
- `marts_s` (`--marts`): then the marts refresh (incremental: the keys the window touched), the
  marts' checks and the publish, as the `marts` asset runs them, with each mart's share;
- `local_bytes`: every local file of the writer after the last window: `.warehouse/` (the
  writer's file, its row maps, the spare published file) and warehouse.duckdb, not the lake
  (object storage, the source of truth).
Every configuration is prefilled and warmed up first, then the measured windows go round them (one
of each per round): a host whose speed drifts moves them alike. The medians of `--runs` and their
ratios to the smallest configuration are printed as tables; the last line is
`RESULT {"window_events": …, "runs": …, "marts": …, "configs": [{"day_size", "history",
"window_s", "marts_s" (null without --marts), "local_bytes", "prefill_s", "ratio": {"window_s",
"marts_s", "local_bytes"}}, …]}`.

Targets (issue 29), medians of 3: `--marts --day-sizes 250000,16000000`: window_s and marts_s at
16M ≤ 1.5× at 250k; `--marts --day-sizes 250000 --history 16000000,256000000`: window_s and
marts_s ≤ 1.5×, local_bytes ≤ 1.2×.

The prefill leaves the state the loads would have left, written in bulk (reads only what it
wrote): the history spread evenly over its days, each day as the maintenance job leaves a settled
day (compacted: one Delta commit, sorted by occurred), and DAY as the loads append it (one Delta
commit and file per window); the key stores of the days within the horizon (72 h) of DAY's
newest event, as the loads leave them (the older days' are dropped as the clock passes); the staging `stg_events` (the loads
stage every window, with the marts or without), in stream order, a change per window of DAY and
per day of history; the manifests (`landing_windows`, `landing_files`, `load_batches`,
`load_log`) of windows of `--window` events, each settled day's landing files as the landing
compaction leaves them; with `--marts`, every mart built in full from the staging. Not written:
the landing zone's own files and commit records of the prefilled windows (in the lake; a window
reads only its own, rebuilds and the full check read the rest).

Cost of the prefill (its warm-up included), measured at 0.5M-1M events on the shared 2-core
host, 2026-12-08 (load 2-3): 34-38 s per 1M events of history, 37 s (50 s with `--marts`) per
1M events of the window's day (a Delta commit a window), ~60 % of it the staging's JSON
extraction; disk per event 161 bytes in the lake and 146-165 bytes local (296-367 with
`--marts`, where the synthetic sessions are one event each). So `--marts --history 256000000`
takes ~3.5 hours or more and ~136 GB; the scratch folders go under TMPDIR, and the bench
refuses up front when the free disk there is short of its estimate (PREFILL_S_PER_M,
DISK_PER_EVENT below).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import itertools
import json
import math
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import orjson
import pyarrow as pa

from bench.scratch import scratch_dir
from rtds_pipeline.lake.batch import parse_batch
from rtds_pipeline.lake.commits import Commit, CommitLog
from rtds_pipeline.lake.compaction import TARGET_BYTES
from rtds_pipeline.lake.storage import Lake, open_lake
from rtds_pipeline.lake.writer import LandingWriter
from rtds_pipeline.settings import SourceConfig
from rtds_pipeline.warehouse import events as wh
from rtds_pipeline.warehouse import marts, staging
from rtds_pipeline.warehouse.delta import DeltaEvents
from rtds_pipeline.warehouse.sqlscripts import run_script, set_meta
from rtds_pipeline.warehouse.store import Warehouse

DAY = dt.date(2026, 11, 20)
SOURCE = SourceConfig("events")
SQL_DIR = Path(__file__).parent / "sql"
BASE_OFFSET = 1_000_000_000_000  # the prefill's offsets; the measured windows' start at 2e12
SAMPLE = 2000  # ids (of DAY) and sessions (of the history) the measured windows reuse
LANDED_BYTES = 180  # a landed event (zstd Parquet): `bytes` of the manifest's unwritten files
# The prefill's cost, with its warm-up, by --marts (the highest measured: module docstring):
PREFILL_S_PER_M = {False: 38, True: 50}  # seconds per 1M events
DISK_PER_EVENT = {False: 330, True: 530}  # bytes: the lake's and the writer's local files


@dataclasses.dataclass
class Day:
    """A prefilled day: `events` events with global indexes first …; window j has sequence
    number and load batch first_seq + j; a settled day's compaction has first_seq + windows."""
    day: dt.date
    events: int
    first: int
    first_seq: int
    windows: int
    settled: bool

    @property
    def next_seq(self) -> int:
        return self.first_seq + self.windows + (1 if self.settled else 0)


def plan_days(day_size: int, history: int, history_days: int, window: int) -> list[Day]:
    """The history spread evenly over `history_days` settled days before DAY, then DAY."""
    per_day, extra = divmod(history, history_days)
    sizes = [(DAY - dt.timedelta(days=history_days - k), per_day + (k < extra))
             for k in range(history_days)]
    days: list[Day] = []
    first, seq = 0, 1
    for day, n in [*sizes, (DAY, day_size)]:
        if n:
            days.append(Day(day, n, first, seq, math.ceil(n / window), day != DAY))
            first, seq = first + n, days[-1].next_seq
    return days


def _sql(name: str) -> str:
    return (SQL_DIR / f"{name}.sql").read_text()


def _keep(con: duckdb.DuckDBPyConnection, rows: str, params: dict[str, object], batch: int,
          hot: bool) -> None:
    """What a load records for new rows (`rows`, a query shaped like events): their keys in the
    key store when their day is hot, their staging."""
    if hot:
        wh.key_store(con, "events").put(con.sql(
            "SELECT occurred_date AS day, key_hi(md5_number(id)) AS h, key_lo(md5_number(id)) AS l, "
            f"rtds_offset::UBIGINT AS pos, source FROM ({rows})", params=params).to_arrow_table(),
            batch)
    staging.stage(con, "events", rows, params)


def _events_rows(con: duckdb.DuckDBPyConnection, day: Day, lo: int, hi: int
                 ) -> duckdb.DuckDBPyRelation:
    midnight = dt.datetime.combine(day.day, dt.time(), dt.UTC)
    return con.sql(_sql("scale_events"), params={
        "midnight": midnight, "first": day.first, "n": day.events, "lo": lo, "hi": hi,
        "base": BASE_OFFSET})


def prefill(lake: Lake, warehouse: Warehouse, days: list[Day], window: int, with_marts: bool
            ) -> tuple[list[str], list[str]]:
    """Write the state the loads leave for these days (module docstring); returns ids of DAY
    and session ids of the history (of DAY without one) for the measured windows to reuse."""
    delta = DeltaEvents(lake, "events")
    app_id = wh._app_id("events")  # the loads' application transaction: batches continue it
    with warehouse.writer(publish=False) as con:
        columns = ", ".join(con.sql("SELECT * FROM events_columns").columns)
        # The loads' clock: the newest `processed` of DAY; only the days within the horizon
        # before it keep their keys (the loads drop the others' as the clock passes them).
        last = days[-1]
        clock = (dt.datetime.combine(last.day, dt.time(), dt.UTC)
                 + dt.timedelta(microseconds=(last.events - 1) * 86_400_000_000 // last.events))
        set_meta(con, "clock:events", clock.isoformat())
        floor = wh.hot_floor(con, "events")
        for day in days:
            if day.settled:  # as compacted: sorted by occurred, under the compaction's batch
                delta.append(_events_rows(con, day, day.first, day.first + day.events)
                             .to_arrow_reader(), app_id, day.first_seq + day.windows)
                files = [f for f in delta.files() if f"occurred_date={day.day}/" in f]
                _keep(con, f"SELECT {columns} FROM read_parquet($files, hive_partitioning = true, "
                      "hive_types = {'occurred_date': DATE})", {"files": files},
                      day.first_seq + day.windows, day.day >= floor)
                continue
            for j in range(day.windows):  # as loaded: a Delta commit and file per window
                lo = day.first + j * window
                rows = _events_rows(con, day, lo, min(lo + window, day.first + day.events)
                                    ).to_arrow_table()
                delta.append(rows, app_id, day.first_seq + j)
                con.register("prefill_rows", rows)
                _keep(con, "SELECT * FROM prefill_rows", {}, day.first_seq + j, day.day >= floor)
                con.unregister("prefill_rows")
        con.register("prefill_days", pa.Table.from_pylist([dataclasses.asdict(d) for d in days]))
        run_script(con, _sql("scale_manifest"), {
            "window": window, "base": BASE_OFFSET, "bytes": LANDED_BYTES, "target": TARGET_BYTES,
            "landing": lake.url_of("landing", f"source={SOURCE.key}")})
        con.unregister("prefill_days")
        ids = [r[0] for r in con.execute(
            f"SELECT id FROM (SELECT id FROM stg_events WHERE occurred_date = ?) "
            f"USING SAMPLE {SAMPLE} ROWS", [DAY]).fetchall()]
        older = "<" if days[0].day < DAY else "="
        sessions = [r[0] for r in con.execute(
            f"SELECT session_id FROM (SELECT session_id FROM stg_events "
            f"WHERE occurred_date {older} ?) USING SAMPLE {SAMPLE} ROWS", [DAY]).fetchall()]
        if with_marts:
            # The staging is the loads' (in stream order): the marts' first build reads it as it
            # is, instead of recomputing it from `events` as a full refresh would.
            marts.prepare(con)
            con.execute("INSERT OR REPLACE INTO mart_watermarks VALUES (?, ?)",
                        [marts.STAGING_SQL, marts.staging_fingerprint()])
            built = marts.refresh(con)
            assert {r.mode for r in built} == {"full"}, built
    return ids, sessions


def land_window(lake: Lake, seq: int, window: int, old_ids: list[str],
                old_sessions: list[str]) -> Commit:
    """`window` events of DAY as one committed window; 3 % are copies of ids already kept, 2 %
    close sessions of the history."""
    first_offset = 2 * BASE_OFFSET + seq * window
    lines = []
    newest = ""
    for i in range(window):
        id_ = old_ids[i % len(old_ids)] if i % 33 == 0 else f"w{seq}-{i}"
        t = f"{DAY}T{(i * 7) % 24:02d}:{i % 60:02d}:{(i * 13) % 60:02d}.000Z"
        closes = i % 50 == 1
        newest = max(newest, t)
        lines.append(orjson.dumps({
            "id": id_, "type": "CLOSE" if closes else "OPEN", "offset": str(first_offset + i),
            "occurred": t, "processed": t,
            "device": {"channel": f"c{i % 977}", "device_type": "IOS",
                       "attributes": {"app_version": "5.2.1", "locale_country_code": "US"}},
            "body": {"session_id": old_sessions[i % len(old_sessions)] if closes
                     else f"s{seq}-{i // 5}"},
            "user": {"contact_id": f"u{i % 977}"}}))
    log = CommitLog(lake, SOURCE.key)
    last = log.latest()
    writer = LandingWriter(lake, SOURCE.key, seq)
    batch = parse_batch(b"\n".join(lines) + b"\n", seq, 0)
    writer.add(batch)
    files, dead = writer.finish()
    commit = Commit(source=SOURCE.key, window_seq=seq, resume_offset=batch.last_offset,
                    previous_offset=last.resume_offset if last else None,
                    first_offset=str(first_offset), files=files, dead_letter_files=dead,
                    events=batch.rows.num_rows, dead_letters=len(batch.dead), offset_updates=0,
                    keepalives=0, reconnects=0, bytes_read=0, max_processed=newest,
                    committed_at=time.time(), stop_reason="bench")
    log.write(commit)
    return commit


def refresh_marts(warehouse: Warehouse) -> tuple[float, dict[str, float]]:
    """Seconds to refresh and check every mart after a window and publish them (to a new
    reader's view of mart_freshness), and each mart's share."""
    t0 = time.perf_counter()
    with warehouse.writer() as con:
        t1 = time.perf_counter()
        done = marts.refresh(con)  # and its checks, before it commits, as the asset does
        t2 = time.perf_counter()
    con = duckdb.connect(str(warehouse.path), read_only=True)
    modes = {m for (m,) in con.execute("SELECT DISTINCT newest_processed IS NOT NULL "
                                       "FROM mart_freshness").fetchall()}
    con.close()
    seconds = time.perf_counter() - t0
    assert modes == {True} and {r.mode for r in done} == {"incremental"}, (modes, done)
    assert not any(c.duplicates or c.violations for c in done), done
    # Besides the marts (their checks included): opening the writer, its checkpoint, the publish
    # (patches the spare).
    return seconds, {**{r.mart: r.seconds for r in done}, "open": t1 - t0,
                     "checkpoint+publish": seconds - (t2 - t0)}


def local_bytes(warehouse: Warehouse) -> int:
    """Every local file of the writer: its private folder and the published file (with a WAL);
    a file under two names (a publish links the current snapshot as the next spare) once."""
    files = [p for p in warehouse.private_dir.rglob("*") if p.is_file()]
    files += [p for p in warehouse.path.parent.glob(f"{warehouse.path.name}*") if p.is_file()]
    sizes = {}
    for p in files:
        try:
            st = p.stat()
        except FileNotFoundError:
            continue
        sizes[(st.st_dev, st.st_ino)] = st.st_size
    return sum(sizes.values())


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@dataclasses.dataclass
class Bench:
    """One configuration: its scratch folder, lake and warehouse, what its windows reuse."""
    day_size: int
    history: int
    window: int
    root: Path
    lake: Lake
    warehouse: Warehouse
    old_ids: list[str]
    old_sessions: list[str]
    next_seq: int
    prefill_s: float = 0.0

    @property
    def name(self) -> str:
        return f"day {self.day_size:>11,}, history {self.history:>11,}"

    def window_seconds(self) -> float:
        """Seconds from a window's landing commit to its rows visible to a new reader."""
        seq, self.next_seq = self.next_seq, self.next_seq + 1
        land_window(self.lake, seq, self.window, self.old_ids, self.old_sessions)
        t0 = time.perf_counter()
        with self.warehouse.writer() as con:
            wh.sync_manifest(con, self.lake, [SOURCE])
            check = wh.load_pending(con, self.lake, "events").check
        con = duckdb.connect(str(self.warehouse.path), read_only=True)
        # A range on id: Parquet statistics skip the day's other row groups (ids of the prefill).
        seen = con.execute("SELECT count(*) FROM events WHERE id >= ? AND id < ?",
                           [f"w{seq}-", f"w{seq}."]).fetchall()[0][0]
        con.close()
        seconds = time.perf_counter() - t0
        assert check.ok and seen == self.window - len(range(0, self.window, 33)), (check, seen)
        return seconds


def start(day_size: int, history: int, history_days: int, window: int, with_marts: bool) -> Bench:
    """A configuration prefilled and warmed up."""
    root = Path(scratch_dir(f"bench-scale-d{day_size}-h{history}-"))
    lake = open_lake(str(root / "lake"))
    warehouse = Warehouse(root / "warehouse.duckdb", lake, memory_limit="2GB")
    days = plan_days(day_size, history, history_days, window)
    t0 = time.perf_counter()
    old_ids, old_sessions = prefill(lake, warehouse, days, window, with_marts)
    bench = Bench(day_size, history, window, root, lake, warehouse, old_ids, old_sessions,
                  days[-1].next_seq)
    filled = time.perf_counter() - t0
    # Warm-up: the first open and publishes, and (--marts) the row maps of the big tables
    # built, the writer's and each of the two published files' (warehouse/rowmap.py): a
    # one-off after a full refresh, counted in the prefill, not in the medians.
    warm = []
    for _ in range(2):
        warm.append(bench.window_seconds())
        if with_marts:
            warm.append(refresh_marts(warehouse)[0])
    bench.prefill_s = time.perf_counter() - t0
    events = day_size + history
    lake_bytes = tree_bytes(root / "lake")
    print(f"{bench.name}: prefilled in {filled:.1f} s, warm-up "
          f"{', '.join(f'{s:.2f}' for s in warm)} s; per 1M events "
          f"{bench.prefill_s / events * 1e6:.1f} s, {lake_bytes / events:.0f} MB in the lake, "
          f"{local_bytes(warehouse) / events:.0f} MB local", flush=True)
    return bench


def _sizes(text: str, least: int) -> list[int]:
    sizes = sorted({int(s.replace("_", "")) for s in text.split(",")})
    if sizes[0] < least:
        raise SystemExit(f"bench.scale: sizes must be at least {least}, got {text!r}")
    return sizes


def _ratio(value: float | None, base: float | None) -> float | None:
    return round(value / base, 3) if value is not None and base else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--day-sizes", default="250000,1000000,4000000,16000000",
                    help="events already in the window's day, a comma list")
    ap.add_argument("--history", default="0",
                    help="events of the days before it, a comma list (each a configuration)")
    ap.add_argument("--history-days", type=int, default=30,
                    help="the days the history is spread over (default 30)")
    ap.add_argument("--window", type=int, default=10_000, help="events a measured window")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--marts", action="store_true", help="also refresh the marts after each window")
    args = ap.parse_args()
    configs = list(itertools.product(_sizes(args.day_sizes, 1), _sizes(args.history, 0)))
    if args.history_days < 1 or args.window < 100 or args.runs < 1:
        raise SystemExit("bench.scale: --history-days and --runs must be at least 1, --window 100")
    events = sum(d + h for d, h in configs)
    need, free = events * DISK_PER_EVENT[args.marts], shutil.disk_usage(tempfile.gettempdir()).free
    print(f"{len(configs)} configuration(s), {events:,} events to prefill: about "
          f"{events / 1e6 * PREFILL_S_PER_M[args.marts] / 60:.0f} min and {need / 1e9:.1f} GB "
          f"({free / 1e9:.1f} GB free in {tempfile.gettempdir()})", flush=True)
    if need > free:
        print(f"bench.scale: not enough disk: the prefill needs about {need / 1e9:.1f} GB "
              f"({DISK_PER_EVENT[args.marts]} bytes an event, lake and local files) and "
              f"{tempfile.gettempdir()} has {free / 1e9:.1f} GB free. Point TMPDIR at a larger "
              "disk, or measure fewer or smaller configurations.", file=sys.stderr)
        return 2
    # Every configuration is prefilled and warmed first, then the measured windows go round them
    # (one window of each per round): a host whose speed drifts over the minutes (seen here: the
    # same work 1.1-1.9 s apart) moves every configuration alike, not the ratio.
    benches = [start(d, h, args.history_days, args.window, args.marts) for d, h in configs]
    window_runs: dict[int, list[float]] = {i: [] for i in range(len(benches))}
    mart_runs: dict[int, list[tuple[float, dict[str, float]]]] = {i: [] for i in range(len(benches))}
    local: dict[int, int] = {}
    for _ in range(args.runs):
        for i, bench in enumerate(benches):
            window_runs[i].append(bench.window_seconds())
            if args.marts:
                mart_runs[i].append(refresh_marts(bench.warehouse))
            local[i] = local_bytes(bench.warehouse)
    rows = []
    for i, bench in enumerate(benches):
        window_s = statistics.median(window_runs[i])
        print(f"{bench.name}: one {args.window:,}-event window {window_s:.2f} s (runs "
              f"{', '.join(f'{r:.2f}' for r in window_runs[i])})", flush=True)
        marts_s = None
        if args.marts:
            marts_s = statistics.median(s for s, _ in mart_runs[i])
            shares = {m: statistics.median(p[m] for _, p in mart_runs[i])
                      for m in mart_runs[i][0][1]}
            print(f"{bench.name}: marts refresh + publish {marts_s:.2f} s (runs "
                  f"{', '.join(f'{s:.2f}' for s, _ in mart_runs[i])}); per mart "
                  + ", ".join(f"{m} {v:.2f}" for m, v in shares.items()), flush=True)
        rows.append({"day_size": bench.day_size, "history": bench.history,
                     "window_s": round(window_s, 4),
                     "marts_s": round(marts_s, 4) if marts_s is not None else None,
                     "local_bytes": local[i], "prefill_s": round(bench.prefill_s, 1)})
        shutil.rmtree(bench.root, ignore_errors=True)
    base = rows[0]  # the smallest day size with the smallest history
    for row in rows:
        row["ratio"] = {k: _ratio(row[k], base[k]) for k in ("window_s", "marts_s", "local_bytes")}
    print(f"\n{'day size':>11}  {'history':>11}  {'window_s':>8}  ratio  {'marts_s':>7}  ratio"
          f"  {'local MB':>9}  ratio")
    for row in rows:
        marts_s, r = row["marts_s"], row["ratio"]
        print(f"{row['day_size']:>11,}  {row['history']:>11,}  {row['window_s']:>8.2f}  "
              f"{r['window_s']:4.2f}x  "
              + (f"{marts_s:>7.2f}  {r['marts_s']:4.2f}x" if marts_s is not None else
                 f"{'-':>7}  {'-':>5}")
              + f"  {row['local_bytes'] / 1e6:>9.1f}  {r['local_bytes']:4.2f}x")
    print("RESULT " + json.dumps({"window_events": args.window, "runs": args.runs,
                                  "marts": args.marts, "configs": rows}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
