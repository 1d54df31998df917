"""`python -m bench.scale [--sizes 250000,1000000,4000000,16000000] [--runs 3] [--marts]`: does one
window's cost grow with the size of its day?

For each size N: one occurred day pre-filled with N events (the Delta day and the id index as
the loads leave them), then `--runs` windows of 10,000 events each landing into that same day
(3 % of them copies of ids already kept, as a real stream's duplicates), each measured from its
landing commit to its rows being visible in `events` to a new reader of warehouse.duckdb:
manifest sync, load, the window's checks, publish, and the reader's query. The sizes are all
prefilled first and their windows measured in turn, one of each size per round. Prints the median
per size and the ratio to the smallest size (target: ≤ 1.5× from 250k to 16M, and ≤ 3 s).

`--marts`: the history runs at 250k events a day up to that day, is also in the marts' staging
and every mart is built (in full), and
each window is followed by a marts refresh (incremental: the keys the window touched; 2 % of its
events close sessions of the history), the marts' checks and the publish, as the `marts` asset
runs them, measured apart: the cost of refreshing the marts after one 10k-event window (target:
≤ 1.5× from 250k to 16M), with each mart's share.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from pathlib import Path

import duckdb
import orjson

from bench.scratch import scratch_dir
from rtds_pipeline.lake.batch import parse_batch
from rtds_pipeline.lake.commits import Commit, CommitLog
from rtds_pipeline.lake.storage import open_lake
from rtds_pipeline.lake.writer import LandingWriter
from rtds_pipeline.settings import SourceConfig
from rtds_pipeline.warehouse import events as wh
from rtds_pipeline.warehouse import marts
from rtds_pipeline.warehouse.delta import DeltaEvents
from rtds_pipeline.warehouse.store import Warehouse

DAY = "2026-11-20"
WINDOW = 10_000
DAILY = 250_000  # events a day of history with --marts
SOURCE = SourceConfig("events")
# A realistic OPEN event's envelope and body (~600 bytes of JSON, like the test server's).
PREFILL = f"""
SELECT uuid()::VARCHAR AS id, 'OPEN' AS type, t AS occurred, t AS processed,
       (t AT TIME ZONE 'UTC')::DATE AS occurred_date, (1000000000000 + i)::VARCHAR AS rtds_offset, 1 AS copies,
       'events' AS source, 'IOS' AS device_type, uuid()::VARCHAR AS channel,
       NULL::VARCHAR AS named_user_id, uuid()::VARCHAR AS contact_id, NULL::VARCHAR AS push_id,
       NULL::VARCHAR AS group_id, uuid()::VARCHAR AS session_id, NULL::VARCHAR AS triggering_push_id,
       NULL::VARCHAR AS triggering_group_id, NULL::VARCHAR AS last_delivered_push_id,
       NULL::VARCHAR AS custom_event_name, NULL::DOUBLE AS custom_event_value,
       '5.2.1' AS app_version, 'US' AS country,
       '{{"id":"' || i || '","type":"OPEN","offset":"' || (1000000000000 + i) || '",' ||
       '"device":{{"channel":"x","device_type":"IOS","attributes":{{"app_version":"5.2.1",' ||
       '"device_model":"iPhone15,2","device_os":"17.1","iana_timezone":"America/New_York",' ||
       '"locale_country_code":"US","locale_language_code":"en","push_opt_in":"true"}}}},' ||
       '"body":{{"session_id":"' || uuid() || '"}},"occurred":"{DAY}T00:00:00.000Z",' ||
       '"processed":"{DAY}T00:00:00.000Z","user":{{"contact_id":"' || uuid() || '"}}}}' AS raw
FROM (SELECT i, TIMESTAMPTZ '{DAY} 00:00:00+00'
                 + to_microseconds(((i - $n + $per_day) * 86400000000 // $per_day)::BIGINT) AS t
      FROM range($n) r(i))
"""


def prefill(lake, warehouse: Warehouse, n: int, with_marts: bool = False
            ) -> tuple[list[str], list[str]]:
    """One day of N events in the Delta table and the id index (and, `with_marts`, the staging
    and every mart); returns some of its ids and session ids."""
    with warehouse.writer(publish=False) as con:
        con.execute("SET preserve_insertion_order = false")
        # The events bench puts all N in DAY; with the marts, the history is N events at a
        # steady 250k a day ending with DAY (a day's or an hour's size then does not grow with
        # the history: the daily marts and stream_health recompute whole days or hours).
        per_day = min(n, DAILY) if with_marts else n
        reader = con.sql(PREFILL, params={"n": n, "per_day": per_day}).to_arrow_reader()
        DeltaEvents(lake, "events").append(reader, "bench-prefill", 1)
        files = DeltaEvents(lake, "events").files()
        con.execute("INSERT INTO events_keys SELECT key_hi(md5_number(id)), key_lo(md5_number(id)), occurred_date, "
                    "rtds_offset::UBIGINT, source FROM read_parquet(?, hive_partitioning = true)",
                    [files])
        if with_marts:
            wh.refresh_views(con, lake)
            marts.refresh(con, full=True)
        sample = con.execute("SELECT id, session_id FROM read_parquet(?) USING SAMPLE 2000 ROWS",
                             [files]).fetchall()
        return [r[0] for r in sample], [r[1] for r in sample]


def land_window(lake, seq: int, first_offset: int, old_ids: list[str],
                old_sessions: list[str]) -> Commit:
    """10,000 events of DAY as one committed window; 3 % are copies of ids already kept, 2 %
    close sessions of the history."""
    lines = []
    for i in range(WINDOW):
        id_ = old_ids[i % len(old_ids)] if i % 33 == 0 else f"w{seq}-{i}"
        t = f"{DAY}T{(i * 7) % 24:02d}:{i % 60:02d}:{(i * 13) % 60:02d}.000Z"
        closes = i % 50 == 1
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
                    keepalives=0, reconnects=0, bytes_read=0, max_processed=None,
                    committed_at=time.time(), stop_reason="bench")
    log.write(commit)
    return commit


def one_window(lake, warehouse: Warehouse, seq: int, old_ids: list[str],
               old_sessions: list[str]) -> float:
    """Seconds from a window's landing commit to its rows visible to a new reader."""
    land_window(lake, seq, 2_000_000_000_000 + seq * WINDOW, old_ids, old_sessions)
    t0 = time.perf_counter()
    with warehouse.writer() as con:
        wh.sync_manifest(con, lake, [SOURCE])
        result = wh.load_pending(con, lake, "events")
        check = result.check
    con = duckdb.connect(str(warehouse.path), read_only=True)
    # A range on id: Parquet statistics skip the day's other row groups (ids of the prefill).
    seen = con.execute("SELECT count(*) FROM events WHERE id >= ? AND id < ?",
                       [f"w{seq}-", f"w{seq}."]).fetchall()[0][0]
    con.close()
    seconds = time.perf_counter() - t0
    assert check.ok and seen == WINDOW - len(range(0, WINDOW, 33)), (check, seen)
    return seconds


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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="250000,1000000,4000000,16000000")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--marts", action="store_true", help="also refresh the marts after each window")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    # Every size is prefilled and warmed first, then the measured windows go round the sizes
    # (one window of each size per round): a host whose speed drifts over the minutes (seen
    # here: the same work 1.1-1.9 s apart) moves every size alike, not the ratio.
    benches = {}
    for n in sizes:
        root = Path(scratch_dir(f"bench-scale-{n}-"))
        lake = open_lake(str(root / "lake"))
        warehouse = Warehouse(root / "warehouse.duckdb", lake, memory_limit="2GB")
        t0 = time.perf_counter()
        old_ids, old_sessions = prefill(lake, warehouse, n, args.marts)
        print(f"{n:>11,} events in {DAY}: prefilled in {time.perf_counter() - t0:.0f} s", flush=True)
        # Warm-up: the first open and publishes, and (--marts) the row maps of the big tables
        # built, the writer's and each of the two published files' (warehouse/rowmap.py): a
        # one-off after a full refresh, shown here but not in the medians.
        warm = []
        for seq in (1, 2):
            warm.append(one_window(lake, warehouse, seq, old_ids, old_sessions))
            if args.marts:
                warm.append(refresh_marts(warehouse)[0])
        print(f"{n:>11,}: warm-up {', '.join(f'{s:.2f}' for s in warm)} s", flush=True)
        benches[n] = (root, lake, warehouse, old_ids, old_sessions)
    runs: dict[int, list[float]] = {n: [] for n in sizes}
    mart_runs: dict[int, list[tuple[float, dict[str, float]]]] = {n: [] for n in sizes}
    for r in range(args.runs):
        for n, (_, lake, warehouse, old_ids, old_sessions) in benches.items():
            runs[n].append(one_window(lake, warehouse, 3 + r, old_ids, old_sessions))
            if args.marts:
                mart_runs[n].append(refresh_marts(warehouse))
    results, mart_results = {}, {}
    for n in sizes:
        results[n] = statistics.median(runs[n])
        print(f"{n:>11,}: one 10k-event window {results[n]:.2f} s (runs "
              f"{', '.join(f'{r:.2f}' for r in runs[n])})", flush=True)
        if args.marts:
            mart_results[n] = statistics.median(s for s, _ in mart_runs[n])
            shares = {m: statistics.median(p[m] for _, p in mart_runs[n])
                      for m in mart_runs[n][0][1]}
            print(f"{n:>11,}: marts refresh + publish {mart_results[n]:.2f} s (runs "
                  f"{', '.join(f'{s:.2f}' for s, _ in mart_runs[n])}); per mart "
                  + ", ".join(f"{m} {v:.2f}" for m, v in shares.items()), flush=True)
        shutil.rmtree(benches[n][0], ignore_errors=True)
    base = results[min(results)]
    print("\nsize          median   ratio to smallest")
    for n, s in results.items():
        print(f"{n:>11,}  {s:6.2f} s   {s / base:.2f}x")
    if mart_results:
        base = mart_results[min(mart_results)]
        print("\nmarts after one window: size, median refresh + publish, ratio to smallest")
        for n, s in mart_results.items():
            print(f"{n:>11,}  {s:6.2f} s   {s / base:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
