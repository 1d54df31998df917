"""`make bench` / `python -m bench [--events N] [--runs R]`: side by side, one backlog, medians.

(w) the server alone: a raw socket takes the gzip bytes (MB/s are compressed bytes here);
(s) test server → our connection: raw gzip bytes of the backlog, decompressed and split;
(a) ours: stream → committed Parquet on local disk (`ingest_window`);
(b) the official Python client's pattern: requests + iter_lines + json.loads + dicts → Parquet;
(c) parse-only: orjson per line over the same bytes held in memory (a Python reader's limit).
Each variant runs in its own process so its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from bench.scratch import scratch_dir
from bench.server import backlog_server

VARIANTS = ("wire", "server", "ours", "official", "parse_only")


def run_variant(name: str, url: str) -> dict:
    import resource

    # Imports happen before the clock starts: every variant pays them once, none in the timing.
    # Ours first, as in the pipeline's processes: it sets jemalloc's options before pyarrow loads.
    import rtds_pipeline.extract.ingest  # noqa: F401

    # isort: split
    import orjson  # noqa: F401
    import pyarrow.parquet  # noqa: F401
    import requests  # noqa: F401
    t0 = time.perf_counter()
    events = 0
    nbytes = 0
    if name == "wire":
        # The server alone: a raw socket takes the compressed response as fast as it comes;
        # timed to the last byte before the stream goes idle; decoded afterwards, untimed.
        import socket
        import zlib
        from urllib.parse import urlsplit
        host = urlsplit(url)
        sock = socket.create_connection((host.hostname, host.port))
        body = b'{"start":"EARLIEST"}'
        sock.sendall(b"POST /api/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                     b"test-access-token\r\nX-UA-Appkey: test-app-key\r\nAccept: "
                     b"application/vnd.urbanairship+x-ndjson; version=3;\r\nContent-Length: "
                     + str(len(body)).encode() + b"\r\n\r\n" + body)
        sock.settimeout(0.04)  # the server's keep-alive interval is 50 ms
        parts, last = [], t0
        try:
            while data := sock.recv(1 << 20):
                parts.append(data)
                last = time.perf_counter()
        except TimeoutError:
            pass
        sock.close()
        raw = b"".join(parts)
        nbytes = len(raw)
        head, _, chunked = raw.partition(b"\r\n\r\n")
        payload, pos = bytearray(), 0
        while pos < len(chunked):
            eol = chunked.find(b"\r\n", pos)
            if eol < 0:
                break
            size = int(chunked[pos:eol], 16)
            payload += chunked[eol + 2:eol + 2 + size]
            pos = eol + 4 + size
        text = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(bytes(payload))
        events = text.count(b"\n") - text.count(b"\n\n")
        took = last - t0
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return {"variant": name, "events": events, "seconds": took,
                "events_per_s": events / took, "mb_per_s": nbytes / took / 1e6, "peak_rss_mb": rss}
    if name == "server":
        from rtds_pipeline.extract.connection import Endpoint, StreamConnection
        from rtds_pipeline.protocol.request import StreamRequest
        conn = StreamConnection(Endpoint(url, "test-app-key", access_token="test-access-token"),
                                StreamRequest(start="EARLIEST"), idle_timeout=5)
        for chunk in conn.chunks():
            nbytes += len(chunk)
            events += chunk.count(b"\n")
            if b"\n\n" in chunk or chunk == b"\n":
                break
    elif name == "ours":
        from rtds_pipeline.extract.ingest import ingest_window
        from rtds_pipeline.extract.reader import WindowLimits
        from rtds_pipeline.lake.storage import open_lake
        from rtds_pipeline.settings import SourceConfig
        out = ingest_window(SourceConfig(name="bench", base_url=url),
                            open_lake(scratch_dir("bench-lake-")),
                            WindowLimits(max_seconds=600, max_events=10**9))
        events, nbytes = out.stats.events, out.stats.bytes
    elif name == "official":
        import pyarrow as pa
        import pyarrow.parquet as pq
        import requests
        h = {"Accept": "application/vnd.urbanairship+x-ndjson; version=3;",
             "Authorization": "Bearer test-access-token", "X-UA-Appkey": "test-app-key"}
        rows = []
        out_dir = scratch_dir("bench-official-")
        r = requests.post(url + "/api/events", json={"start": "EARLIEST"}, headers=h, stream=True)
        for line in r.iter_lines():
            if not line:
                break  # caught up
            ev = json.loads(line)
            nbytes += len(line) + 1
            rows.append({"id": ev["id"], "type": ev["type"], "offset": ev["offset"],
                         "occurred": ev["occurred"], "processed": ev["processed"],
                         "raw": json.dumps(ev)})
            events += 1
            if len(rows) >= 100_000:
                pq.write_table(pa.Table.from_pylist(rows), f"{out_dir}/{events}.parquet")
                rows = []
        if rows:
            pq.write_table(pa.Table.from_pylist(rows), f"{out_dir}/{events}.parquet")
        r.close()
    elif name == "parse_only":
        import orjson

        from rtds_pipeline.extract.connection import Endpoint, StreamConnection
        from rtds_pipeline.protocol.request import StreamRequest
        conn = StreamConnection(Endpoint(url, "test-app-key", access_token="test-access-token"),
                                StreamRequest(start="EARLIEST"), idle_timeout=5)
        parts = []
        for chunk in conn.chunks():
            parts.append(chunk)
            if b"\n\n" in chunk or chunk == b"\n":
                break
        data = b"".join(parts)
        t0 = time.perf_counter()  # parse only: the bytes are already in memory
        for line in data.split(b"\n"):
            if line:
                orjson.loads(line)
                events += 1
        nbytes = len(data)
    took = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"variant": name, "events": events, "seconds": took, "events_per_s": events / took,
            "mb_per_s": nbytes / took / 1e6, "peak_rss_mb": rss}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=2_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--port", type=int, default=8799)
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help="which to run, comma-separated (e.g. `ours` alone for a 2M-event window)")
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args.variant, args.url)))
        return 0
    with backlog_server(args.port, args.events) as url:
        variants = [v for v in VARIANTS if v in args.variants.split(",")]
        results: dict[str, list[dict]] = {v: [] for v in variants}
        for _ in range(args.runs):
            for v in variants:  # interleaved, so drift hits every variant alike
                out = subprocess.run([sys.executable, "-m", "bench", "--variant", v, "--url", url],
                                     capture_output=True, text=True, check=True)
                results[v].append(json.loads(out.stdout.strip().splitlines()[-1]))
    med = {v: {k: statistics.median(r[k] for r in rs) for k in
               ("events", "events_per_s", "mb_per_s", "peak_rss_mb")} for v, rs in results.items()}
    print(f"\n{args.runs} runs, medians, {os.cpu_count()} cores")
    print(f"{'variant':<12}{'events':>10}{'events/s':>12}{'MB/s':>9}{'peak RSS MB':>13}")
    for v in variants:
        m = med[v]
        print(f"{v:<12}{m['events']:>10,.0f}{m['events_per_s']:>12,.0f}{m['mb_per_s']:>9.1f}"
              f"{m['peak_rss_mb']:>13.0f}")
    if "ours" in med and "parse_only" in med:
        ours = med["ours"]["events_per_s"]
        print(f"\nours / parse-only = {ours / med['parse_only']['events_per_s']:.2f} (target ≥ 0.7)")
    if "ours" in med and "official" in med:
        print(f"ours / official   = {med['ours']['events_per_s'] / med['official']['events_per_s']:.1f}"
              " (target ≥ 6)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
