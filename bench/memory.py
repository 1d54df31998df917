"""`python -m bench.memory [--events N] [--runs R]`: where one window's memory goes.

Each run reads one window of ours (`ingest_window`, stream → committed Parquet) in its own
process and samples every 20 ms: RSS, bytes held by Arrow's memory pool, and glibc's heap
(`mallinfo2`: what it holds from the OS, what is in use). Side by side, interleaved, medians:

- shipped: as the pipeline runs (Arrow's pool switched to jemalloc, freed pages handed back
  within 200 ms, no "muzzy" stage: `rtds_pipeline/allocator.py`);
- muzzy-200: jemalloc with a 200 ms muzzy stage (MADV_FREE pages, still counted in RSS), as
  shipped before;
- mimalloc: Arrow's own default pool (`ARROW_DEFAULT_MEMORY_POOL`).

The target (issue 3) is a peak RSS ≤ 300 MB for a 2,000,000-event window.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import threading
import time

from bench.scratch import scratch_dir
from bench.server import backlog_server

CONFIGS = {"shipped": {},
           "muzzy-200": {"JE_ARROW_MALLOC_CONF": "dirty_decay_ms:200,muzzy_decay_ms:200"},
           "mimalloc": {"ARROW_DEFAULT_MEMORY_POOL": "mimalloc"}}


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                               "usmblks", "fsmblks", "uordblks", "fordblks",
                                               "keepcost")]


def run_window(url: str) -> dict:
    # Ours first, as in the pipeline's processes: it sets jemalloc's options before pyarrow loads.
    from rtds_pipeline.extract.ingest import ingest_window
    from rtds_pipeline.extract.reader import WindowLimits
    from rtds_pipeline.lake.storage import open_lake
    from rtds_pipeline.settings import SourceConfig

    # isort: split
    import orjson  # noqa: F401  -- the same imports as `python -m bench`'s variants
    import pyarrow as pa
    import pyarrow.parquet  # noqa: F401
    import requests  # noqa: F401

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    page = os.sysconf("SC_PAGE_SIZE")

    def rss_mb() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * page / 2**20

    samples: list[tuple[float, float, float, float]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            m = libc.mallinfo2()
            samples.append((rss_mb(), pa.total_allocated_bytes() / 2**20,
                            (m.arena + m.hblkhd) / 2**20, (m.uordblks + m.hblkhd) / 2**20))
            time.sleep(0.02)

    base = rss_mb()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    out = ingest_window(SourceConfig(name="bench", base_url=url),
                        open_lake(scratch_dir("bench-lake-")),
                        WindowLimits(max_seconds=600, max_events=10**9))
    took = time.perf_counter() - t0
    done.set()
    sampler.join()
    peak = max(samples)
    return {"events": out.stats.events, "events_per_s": out.stats.events / took,
            "base_mb": base, "peak_rss_mb": peak[0], "arrow_at_peak_mb": peak[1],
            "glibc_held_at_peak_mb": peak[2], "glibc_in_use_at_peak_mb": peak[3],
            "arrow_max_mb": max(s[1] for s in samples), "pool": pa.default_memory_pool().backend_name}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=2_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--port", type=int, default=8796)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.url:
        print(json.dumps(run_window(args.url)))
        return 0
    results: dict[str, list[dict]] = {c: [] for c in CONFIGS}
    with backlog_server(args.port, args.events) as url:
        for run in range(args.runs):
            for name, env in CONFIGS.items():
                out = subprocess.run([sys.executable, "-m", "bench.memory", "--url", url],
                                     capture_output=True, text=True, check=True,
                                     env={**os.environ, **env})
                r = json.loads(out.stdout.strip().splitlines()[-1])
                results[name].append(r)
                print(f"run {run + 1} {name:9s} peak RSS {r['peak_rss_mb']:4.0f} MB "
                      f"(libraries {r['base_mb']:.0f}, Arrow pool {r['arrow_at_peak_mb']:.0f}, "
                      f"glibc in use {r['glibc_in_use_at_peak_mb']:.0f} of "
                      f"{r['glibc_held_at_peak_mb']:.0f} held) {r['events_per_s']:,.0f} events/s "
                      f"[{r['pool']}]", flush=True)
    print(f"\n| config | peak RSS MB (median of {args.runs}) | events/s | Arrow pool max MB |")
    print("|---|---:|---:|---:|")
    for name, rs in results.items():
        print(f"| {name} | {statistics.median(r['peak_rss_mb'] for r in rs):.0f} "
              f"| {statistics.median(r['events_per_s'] for r in rs):,.0f} "
              f"| {statistics.median(r['arrow_max_mb'] for r in rs):.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
