"""`python -m bench.keys [--keys 16000000,1000000000] [--days 4] [--window 10000] [--runs 7]`:
does a window's dedupe probe cost grow with the keys the store holds?

The structure alone (issue 29's third target): the product's key store (`warehouse/keys.py`,
RocksDB, a column family a day) holding `--keys` keys of 128 bits spread over `--days` hot days
(4: a 72-hour horizon and the day in progress; 1B keys is 3,000 events/s over those 4 days),
built in bulk as sorted SST files ingested into each day (the state a store's compactions leave:
its keys sorted in levels, with a Bloom filter in every file). Then, per run, a window's work as
the load does it, through the same calls (`KeyStore.probe`, `KeyStore.put`): `--window` keys of
the newest day probed (3 % of them ids the day holds, a real stream's copies; the rest new),
then the new ones written (one synced write). The sizes are measured round-robin, one window of
each per run, after a warm-up window each; medians of `--runs`, ratios to the smallest. The last
line is `RESULT {"window": …, "days": …, "runs": …, "configs": [{"keys", "probe_ms", "put_ms",
"bytes_per_key", "build_s", "ratio": {"probe_ms", "put_ms"}}, …]}`.

Target: a 10k-key probe at 1B keys ≤ 1.5× its cost at 16M keys.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from rocksdict import SstFileWriter

from bench.scratch import scratch_dir
from rtds_pipeline.warehouse import keys

DAY = dt.date(2026, 11, 20)
SST_KEYS = 50_000_000  # keys per SST file of the bulk build
VALUE = keys.VALUE.pack(1_000_000_000_000, 1) + b"events"


def _random_keys(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 2**64, size=(n, 2), dtype=np.uint64, endpoint=False)


def build(root: Path, total: int, days: int, rng: np.random.Generator) -> tuple[keys.KeyStore, np.ndarray]:
    """A store of `total` keys over `days` days, in bulk; returns it and keys of its newest day."""
    store = keys.KeyStore(root)
    per_day = total // days
    sample = np.empty((0, 2), np.uint64)
    for k in range(days):
        day = DAY - dt.timedelta(days=days - 1 - k)
        family = store._family(day, create=True)
        assert family is not None
        files = []
        chunks = -(-per_day // SST_KEYS)
        for c in range(chunks):
            n = per_day // chunks + (c < per_day % chunks)
            chunk = _random_keys(rng, n)
            # Each file covers its own slice of the key space (its keys' first half in the c-th
            # of `chunks` ranges), sorted: the files never overlap, so ingest puts them all in
            # the bottom level, as compactions would leave them.
            if chunks > 1:
                span = 2**64 // chunks
                chunk[:, 0] = np.uint64(c * span) + chunk[:, 0] % np.uint64(span)
            chunk = chunk[np.lexsort((chunk[:, 1], chunk[:, 0]))]
            path = root / f"bulk-{k}-{c}.sst"
            writer = SstFileWriter(keys._options())
            writer.open(str(path))
            raw = chunk.astype(">u8").tobytes()
            for i in range(0, len(raw), 16):
                writer[raw[i:i + 16]] = VALUE
            writer.finish()
            files.append(str(path))
            if k == days - 1:
                sample = np.concatenate([sample, chunk[rng.choice(len(chunk), 2000, replace=False)]])
        family.ingest_external_file(files)
        for path in files:
            Path(path).unlink(missing_ok=True)
    return store, sample


def window(store: keys.KeyStore, sample: np.ndarray, n: int, batch: int,
           rng: np.random.Generator) -> tuple[float, float]:
    """Seconds to probe `n` keys of the newest day (3 % held) and to write the new ones."""
    old = sample[rng.choice(len(sample), max(1, n * 3 // 100), replace=False)]
    new = _random_keys(rng, n - len(old))
    both = np.concatenate([old, new])
    day = pa.array([DAY] * n, pa.date32())
    probe = pa.table({"day": day, "h": pa.array(both[:, 0]), "l": pa.array(both[:, 1])})
    t0 = time.perf_counter()
    hits = store.probe(probe)
    t1 = time.perf_counter()
    assert hits.num_rows >= len(old), (hits.num_rows, len(old))
    rows = pa.table({"day": day[:len(new)], "h": pa.array(new[:, 0]), "l": pa.array(new[:, 1]),
                     "pos": pa.array(np.arange(len(new), dtype=np.uint64)),
                     "source": pa.array(["events"] * len(new))})
    t2 = time.perf_counter()
    store.put(rows, batch)
    t3 = time.perf_counter()
    return t1 - t0, t3 - t2


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keys", default="16000000,1000000000")
    ap.add_argument("--days", type=int, default=4)
    ap.add_argument("--window", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    sizes = sorted(int(s.replace("_", "")) for s in args.keys.split(","))
    rng = np.random.default_rng(29)
    stores = []
    for total in sizes:
        root = Path(scratch_dir(f"bench-keys-{total}-"))
        t0 = time.perf_counter()
        store, sample = build(root, total, args.days, rng)
        built = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
        window(store, sample, args.window, 1, rng)  # warm-up
        stores.append((total, root, store, sample, built, size))
        print(f"{total:>13,} keys: built in {built:.0f} s, {size / total:.1f} bytes a key",
              flush=True)
    runs: dict[int, list[tuple[float, float]]] = {t: [] for t in sizes}
    for r in range(args.runs):
        for total, _, store, sample, _, _ in stores:
            runs[total].append(window(store, sample, args.window, 2 + r, rng))
    rows = []
    for total, root, store, _, built, size in stores:
        probe = statistics.median(p for p, _ in runs[total]) * 1e3
        put = statistics.median(w for _, w in runs[total]) * 1e3
        print(f"{total:>13,} keys: probe {probe:.1f} ms, put {put:.1f} ms (runs "
              + ", ".join(f"{p * 1e3:.1f}/{w * 1e3:.1f}" for p, w in runs[total]) + ")",
              flush=True)
        rows.append({"keys": total, "probe_ms": round(probe, 2), "put_ms": round(put, 2),
                     "bytes_per_key": round(size / total, 1), "build_s": round(built, 1)})
        store.close()
        shutil.rmtree(root, ignore_errors=True)
    for row in rows:
        row["ratio"] = {k: round(row[k] / rows[0][k], 3) for k in ("probe_ms", "put_ms")}
    print("RESULT " + json.dumps({"window": args.window, "days": args.days, "runs": args.runs,
                                  "configs": rows}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
