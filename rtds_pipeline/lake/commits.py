"""The commit log: the single source of truth for what is landed and where to resume.

A window's files become visible only when its commit record is written. Records live at
`_commits/source=<name>/<window_seq>.json`, one per window, written in one PUT (object stores)
or by an atomic rename (local folders). The newest record holds the resume offset. A file no
commit lists does not exist for readers and is garbage for `collect_orphans`.
"""

from __future__ import annotations

import dataclasses
import time
import uuid

import orjson

from rtds_pipeline.lake.storage import Lake


@dataclasses.dataclass
class LandedFile:
    path: str  # relative to the lake root
    rows: int
    bytes: int
    day: str  # occurred date (UTC) of its rows
    min_occurred: str | None
    max_occurred: str | None


@dataclasses.dataclass
class Commit:
    source: str
    window_seq: int
    resume_offset: str | None
    previous_offset: str | None
    first_offset: str | None
    files: list[LandedFile]
    dead_letter_files: list[LandedFile]
    events: int
    dead_letters: int
    offset_updates: int
    keepalives: int
    reconnects: int
    bytes_read: int
    max_processed: str | None
    committed_at: float
    stop_reason: str
    duplicates: int = 0  # copies of an id seen twice inside the window
    late_events: int = 0  # occurred on an earlier UTC day than processed

    @property
    def days(self) -> list[str]:
        return sorted({f.day for f in self.files})

    def to_json(self) -> bytes:
        return orjson.dumps(dataclasses.asdict(self), option=orjson.OPT_INDENT_2)

    @classmethod
    def from_json(cls, raw: bytes) -> Commit:
        d = orjson.loads(raw)
        d["files"] = [LandedFile(**f) for f in d["files"]]
        d["dead_letter_files"] = [LandedFile(**f) for f in d["dead_letter_files"]]
        return cls(**d)


class CommitLog:
    """The commits of one source (and subset) in a lake."""

    def __init__(self, lake: Lake, source: str) -> None:
        self.lake = lake
        self.source = source
        self.dir = lake.path("_commits", f"source={source}")

    def _name(self, seq: int) -> str:
        return f"{self.dir}/{seq:010d}.json"

    def sequences(self) -> list[int]:
        try:
            names = self.lake.fs.ls(self.dir, detail=False, refresh=True)
        except FileNotFoundError:
            return []
        return sorted(int(n.rsplit("/", 1)[-1][:-5]) for n in names if n.endswith(".json"))

    def latest(self) -> Commit | None:
        seqs = self.sequences()
        return self.read(seqs[-1]) if seqs else None

    def read(self, seq: int) -> Commit:
        return Commit.from_json(self.lake.fs.cat_file(self._name(seq)))

    def since(self, seq: int) -> list[Commit]:
        """The records after `seq`, in order. Sequence numbers are consecutive, so this probes
        seq+1, seq+2 … until one is absent: O(new records), no listing."""
        out = []
        while True:
            try:
                out.append(self.read(seq + len(out) + 1))
            except FileNotFoundError:
                return out

    def all(self) -> list[Commit]:
        return [self.read(s) for s in self.sequences()]

    def write(self, commit: Commit) -> None:
        """Publish a commit atomically. Its files must already be durable."""
        fs, final = self.lake.fs, self._name(commit.window_seq)
        if fs.exists(final):
            raise FileExistsError(f"commit {final} exists: another writer owns source "
                                  f"{self.source!r}; run one reader per source and subset")
        data = commit.to_json()
        if self.lake.is_local:
            # Local folders: write aside, then rename — the rename is the atomic step.
            tmp = f"{self.dir}/.{commit.window_seq:010d}.{uuid.uuid4().hex}.tmp"
            self.lake.write_durable(tmp, data)
            fs.mv(tmp, final)
        else:
            self.lake.write_durable(final, data)  # a single PUT: visible whole or not at all

    def committed_files(self) -> list[LandedFile]:
        return [f for c in self.all() for f in c.files]


def collect_orphans(lake: Lake, log: CommitLog, older_than_s: float = 3600) -> list[str]:
    """Delete landing files of this source that no commit lists (left by a crash)."""
    listed = {lake.path(f.path) for c in log.all() for f in (*c.files, *c.dead_letter_files)}
    removed = []
    now = time.time()
    for area in ("landing", "dead_letter"):
        base = lake.path(area, f"source={log.source}")
        try:
            found = lake.fs.find(base, detail=True)
        except FileNotFoundError:
            continue
        for path, info in found.items():
            mtime = info.get("mtime") or info.get("LastModified")
            age = now - (mtime.timestamp() if hasattr(mtime, "timestamp") else float(mtime or now))
            if path not in listed and age >= older_than_s:
                lake.fs.rm(path)
                removed.append(path)
    return removed
