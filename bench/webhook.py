"""`python -m bench.webhook [--seconds S] [--runs R]`: the webhook receiver under sustained load.

Starts `rtds-pipeline webhook` (production commit policy, basic auth, a local lake in a scratch
folder) and, in another process, a load generator: C keep-alive connections on loopback, each
POSTing its next request as soon as the previous one is answered (a sender that waits for its
acks, as Airship's does). Phases, side by side in one invocation:

  batch100-C  100-event arrays (Airship's largest batch) on C connections: events/s
  single-C    single-event objects (batch size 1) on C connections: requests/s

Each phase runs `--seconds` after a 3 s warm-up; ack latency is the time from sending a request
to its 2xx (p50 / p95 / max). The receiver's CPU time over the phase is reported, and after
the runs every acknowledged event is checked to be in the committed landing windows.

The load generator is a raw asyncio HTTP/1.1 client (not httpx): it must not be what limits the
numbers on a 2-core machine where it shares the cores with the receiver.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.scratch import scratch_dir
from rtds_pipeline.run import wait_http

BASIC = ("bench", "bench-secret")
EVENTS = 20_000  # distinct generated events, cycled through by the load generator


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=15.0, help="measured seconds per phase")
    ap.add_argument("--runs", type=int, default=3, help="runs of every phase (medians reported)")
    ap.add_argument("--batch-connections", default="1,16,64", help="connections, 100-event phases")
    ap.add_argument("--single-connections", default="1,64,256,512", help="connections, 1-event phases")
    ap.add_argument("--port", type=int, default=8738)
    ap.add_argument("--commit-quiet", type=float, help="RTDS_WEBHOOK_COMMIT_QUIET (default: the "
                    "production default)")
    args = ap.parse_args()
    tmp = Path(scratch_dir("bench-webhook-"))
    lake = tmp / "lake"
    env = {**os.environ, "RTDS_LAKE_URL": str(lake), "RTDS_WEBHOOK_SOURCE": "hook",
           "RTDS_WEBHOOK_BASIC": ":".join(BASIC)}
    env.pop("RTDS_SOURCES_FILE", None)
    for key in [k for k in env if k.startswith("RTDS_WEBHOOK_COMMIT")]:
        del env[key]  # the production defaults
    if args.commit_quiet:
        env["RTDS_WEBHOOK_COMMIT_QUIET"] = str(args.commit_quiet)
    receiver = subprocess.Popen(
        [sys.executable, "-m", "rtds_pipeline.cli", "webhook", "--port", str(args.port)],
        env=env, stdout=subprocess.DEVNULL, stderr=open(tmp / "receiver.log", "wb"))
    phases = ([("batch100", 100, int(c)) for c in args.batch_connections.split(",")]
              + [("single", 1, int(c)) for c in args.single_connections.split(",")])
    results: dict[str, list[dict]] = {f"{n}-{c}": [] for n, _, c in phases}
    print(f"load before: {_load()}", flush=True)
    try:
        if not wait_http(f"http://127.0.0.1:{args.port}/healthz", receiver, 120):
            raise RuntimeError(f"the receiver did not start: {(tmp / 'receiver.log').read_text()}")
        import psutil
        proc = psutil.Process(receiver.pid)
        for run in range(args.runs):
            for name, batch, conns in phases:  # interleaved: every phase sees the same noise
                client = subprocess.Popen(
                    [sys.executable, "-c", f"from bench.webhook import client_main; "
                     f"client_main({args.port}, {batch}, {conns}, {args.seconds})"],
                    stdout=subprocess.PIPE, text=True)
                marks = {}
                for line in client.stdout:  # the client says when the measured span starts/ends
                    if line.strip() in ("measuring", "measured"):
                        marks[line.strip()] = (time.monotonic(), sum(proc.cpu_times()[:2]),
                                               _next_window(args.port))
                    elif line.startswith("{"):
                        result = json.loads(line)
                if client.wait() != 0:
                    raise RuntimeError(f"the load generator failed ({client.returncode})")
                (t0, c0, w0), (t1, c1, w1) = marks["measuring"], marks["measured"]
                result["receiver_cpu"] = (c1 - c0) / (t1 - t0)
                result["windows_per_s"] = (w1 - w0) / (t1 - t0)
                results[f"{name}-{conns}"].append(result)
                print(f"run {run + 1} {name}-{conns}: {_line(result)}", flush=True)
    finally:
        receiver.terminate()
        receiver.wait(60)
    print(f"load after: {_load()}")
    acked = sum(r["events_acked"] for rs in results.values() for r in rs)
    landed = _landed(lake)
    print(f"\nevents acknowledged (all runs, warm-ups included) {acked:,}; "
          f"in committed windows {landed:,}")
    print("\n| phase | connections | events/s | requests/s | ack p50 ms | ack p95 ms | ack max ms "
          "| windows/s | receiver CPU | non-2xx |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (name, _, conns), rs in zip(phases, results.values(), strict=True):
        med = {k: statistics.median(r[k] for r in rs) for k in
               ("events_per_s", "requests_per_s", "p50_ms", "p95_ms", "max_ms", "windows_per_s",
                "receiver_cpu")}
        print(f"| {name} | {conns} | {med['events_per_s']:,.0f} | {med['requests_per_s']:,.0f} | "
              f"{med['p50_ms']:,.0f} | {med['p95_ms']:,.0f} | {med['max_ms']:,.0f} | "
              f"{med['windows_per_s']:.1f} | {med['receiver_cpu']:.0%} | "
              f"{sum(r['errors'] for r in rs)} |")
    if landed < acked:
        print("ERROR: acknowledged events are missing from the lake", file=sys.stderr)
        return 1
    return 0


def _line(r: dict) -> str:
    return (f"{r['events_per_s']:,.0f} events/s, {r['requests_per_s']:,.0f} requests/s, ack p50 "
            f"{r['p50_ms']:,.0f} ms p95 {r['p95_ms']:,.0f} ms, receiver CPU "
            f"{r['receiver_cpu']:.0%}, {r['errors']} non-2xx")


def _next_window(port: int) -> int:
    import httpx
    return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=30).json()["next_window"]


def _load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg()) + " (1, 5, 15 min)"


def _landed(lake: Path) -> int:
    from rtds_pipeline.lake.commits import CommitLog
    from rtds_pipeline.lake.storage import open_lake
    return sum(c.events for c in CommitLog(open_lake(str(lake)), "hook").all())


# ------------------------------------------------------------------------------ load generator

def _bodies(batch: int) -> list[bytes]:
    from rtds_pipeline.testserver.log import StreamLog
    log = StreamLog(seed=11)
    log.generate_live(EVENTS)
    lines = [line for line, t in zip(log.lines, log.types, strict=True) if t != "COMPLIANCE"]
    if batch == 1:
        return lines
    return [b"[" + b",".join(lines[i:i + batch]) + b"]" for i in range(0, len(lines) - batch, batch)]


def client_main(port: int, batch: int, connections: int, seconds: float) -> None:
    import uvloop
    bodies = _bodies(batch)
    result = uvloop.run(_load_phase(port, bodies, batch, connections, seconds))
    print(json.dumps(result))


async def _load_phase(port: int, bodies: list[bytes], batch: int, connections: int,
                      seconds: float) -> dict:
    token = base64.b64encode(":".join(BASIC).encode())
    head = (b"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json; "
            b"charset=UTF-8\r\nAuthorization: Basic " + token + b"\r\nContent-Length: %d\r\n\r\n")
    warm_until = time.monotonic() + 3.0
    stop_at = warm_until + seconds
    latencies: list[float] = []  # of the requests answered within the measured span
    counts = {"acked": 0, "errors": 0}
    cursor = [0]

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        while time.monotonic() < stop_at:
            body = bodies[cursor[0] % len(bodies)]
            cursor[0] += 1
            t0 = time.monotonic()
            writer.write(head % len(body) + body)
            answer = await reader.readuntil(b"\r\n\r\n")
            length = int(answer.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
            await reader.readexactly(length)
            t1 = time.monotonic()
            ok = answer.startswith(b"HTTP/1.1 2")
            counts["acked" if ok else "errors"] += 1
            if ok and warm_until <= t1 < stop_at:
                latencies.append(t1 - t0)
            if b"connection: close" in answer.lower():
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        writer.close()

    async def marks() -> None:
        await asyncio.sleep(warm_until - time.monotonic())
        print("measuring", flush=True)
        await asyncio.sleep(stop_at - time.monotonic())
        print("measured", flush=True)

    await asyncio.gather(marks(), *(connection() for _ in range(connections)))
    latencies.sort()
    n = len(latencies)
    return {"batch": batch, "connections": connections, "requests": n,
            "errors": counts["errors"], "events_acked": counts["acked"] * batch,
            "events_per_s": n * batch / seconds, "requests_per_s": n / seconds,
            "p50_ms": 1000 * latencies[n // 2] if n else 0.0,
            "p95_ms": 1000 * latencies[int(n * 0.95)] if n else 0.0,
            "max_ms": 1000 * latencies[-1] if n else 0.0}


if __name__ == "__main__":
    raise SystemExit(main())
