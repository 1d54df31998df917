"""The committed view of a source's landing zone, and clean-up of what no commit lists.

The live files of a source are the files its window and compaction records list, minus those a
later compaction superseded. `LakeState` folds records in order; a checkpoint
(`_commits/source=<key>/_checkpoint`, written by housekeeping) holds the state as of a sequence
number, so reading the state costs the checkpoint plus the records after it, never the whole log.
The checkpoint is derived and advisory: the log stays the truth, and a missing or stale
checkpoint only means more records to read.

A file in `landing/` or `dead_letter/` that no record lists was left by a writer that crashed
before its commit, or by the loser of a commit race; `collect_orphans` deletes it once it is
older than a grace period (a window in flight is younger). Superseded files are kept for a
retention period (readers that listed them before the compaction keep working), then deleted.
"""

from __future__ import annotations

import dataclasses
import os
import time
import uuid
from collections.abc import Iterable

import orjson

from rtds_pipeline.lake.commits import COMPACTION, Commit, CommitLog, LandedFile
from rtds_pipeline.lake.storage import Lake
from rtds_pipeline.settings import ORPHAN_GRACE_HOURS, SUPERSEDED_RETENTION_HOURS

CHECKPOINT = "_checkpoint"
ORPHAN_GRACE_S = ORPHAN_GRACE_HOURS * 3600
SUPERSEDED_RETENTION_S = SUPERSEDED_RETENTION_HOURS * 3600


@dataclasses.dataclass
class LakeState:
    """A source's files as of record `seq`."""

    seq: int = 0
    resume_offset: str | None = None
    live: dict[str, LandedFile] = dataclasses.field(default_factory=dict)  # path → file
    dead_letters: dict[str, LandedFile] = dataclasses.field(default_factory=dict)
    superseded: dict[str, float] = dataclasses.field(default_factory=dict)  # path → since when
    committed_at: dict[str, float] = dataclasses.field(default_factory=dict)  # live path → when

    def apply(self, commit: Commit) -> None:
        if commit.window_seq != self.seq + 1:
            raise ValueError(f"record {commit.window_seq} applied after {self.seq}: the log has a "
                             "gap or the records were read out of order")
        for path in commit.replaces if commit.kind == COMPACTION else ():
            if self.live.pop(path, None) is not None:
                self.superseded[path] = commit.committed_at
                self.committed_at.pop(path, None)
        for f in commit.files:
            self.live[f.path] = f
            self.committed_at[f.path] = commit.committed_at
        for f in commit.dead_letter_files:
            self.dead_letters[f.path] = f
        self.seq = commit.window_seq
        self.resume_offset = commit.resume_offset

    def files(self, days: Iterable[str] | None = None) -> list[LandedFile]:
        wanted = None if days is None else set(days)
        return sorted((f for f in self.live.values() if wanted is None or f.day in wanted),
                      key=lambda f: (f.day, f.path))

    def by_day(self) -> dict[str, list[LandedFile]]:
        out: dict[str, list[LandedFile]] = {}
        for f in self.files():
            out.setdefault(f.day, []).append(f)
        return out

    def listed(self) -> set[str]:
        """Every path a record still accounts for (live, dead letters, superseded but kept)."""
        return {*self.live, *self.dead_letters, *self.superseded}

    def to_json(self) -> bytes:
        return orjson.dumps({
            "seq": self.seq, "resume_offset": self.resume_offset,
            "live": [dataclasses.asdict(f) for f in self.live.values()],
            "dead_letters": [dataclasses.asdict(f) for f in self.dead_letters.values()],
            "superseded": self.superseded, "committed_at": self.committed_at})

    @classmethod
    def from_json(cls, raw: bytes) -> LakeState:
        d = orjson.loads(raw)
        return cls(d["seq"], d["resume_offset"],
                   {f["path"]: LandedFile(**f) for f in d["live"]},
                   {f["path"]: LandedFile(**f) for f in d["dead_letters"]},
                   dict(d["superseded"]), dict(d.get("committed_at", {})))


def _checkpoint_path(log: CommitLog) -> str:
    return f"{log.dir}/{CHECKPOINT}"


def load_state(log: CommitLog) -> LakeState:
    """The checkpoint (if any) plus every record after it."""
    try:
        state = LakeState.from_json(log.lake.fs.cat_file(_checkpoint_path(log)))
    except (FileNotFoundError, ValueError, KeyError):
        state = LakeState()
    for commit in log.since(state.seq):
        state.apply(commit)
    return state


def write_checkpoint(log: CommitLog, state: LakeState) -> None:
    """Replace the checkpoint (advisory: a lost race only means more records to read later)."""
    path, data = _checkpoint_path(log), state.to_json()
    if log.lake.is_local:
        tmp = f"{log.dir}/.{CHECKPOINT}.{uuid.uuid4().hex}.tmp"
        log.lake.write_durable(tmp, data)
        os.replace(tmp, path)
    else:
        log.lake.fs.pipe_file(path, data)


def live_files(lake: Lake, source: str, days: Iterable[str] | None = None) -> list[LandedFile]:
    """The committed, not superseded landing files of a source (of these days), for rebuilds and
    for anyone reading the landing zone: a glob would also see orphans and superseded files."""
    return load_state(CommitLog(lake, source)).files(days)


def collect_orphans(lake: Lake, log: CommitLog, older_than_s: float = ORPHAN_GRACE_S,
                    state: LakeState | None = None) -> list[str]:
    """Delete files of this source that no record lists and that are older than the grace
    period (left by a crash or a lost commit race). Returns their paths."""
    state = state or load_state(log)
    listed = {lake.path(p) for p in state.listed()}
    removed = []
    now = time.time()
    for area in ("landing", "dead_letter"):
        base = lake.path(area, f"source={log.source}")
        try:
            found = lake.fs.find(base, detail=True)
        except FileNotFoundError:
            continue
        for path, info in found.items():
            path = path if lake.is_local else path.removeprefix(f"{lake.protocol}://")
            if path in listed or now - _mtime(info, now) < older_than_s:
                continue
            try:
                lake.fs.rm(path)
            except FileNotFoundError:
                continue
            removed.append(path)
    return removed


def delete_superseded(lake: Lake, log: CommitLog, state: LakeState, retention_s: float,
                      now: float | None = None) -> list[str]:
    """Delete files superseded longer than `retention_s` ago; drops them from `state`."""
    now = time.time() if now is None else now
    due = [p for p, since in state.superseded.items() if now - since >= retention_s]
    for path in due:
        try:
            lake.fs.rm(lake.path(path))
        except FileNotFoundError:
            pass
        del state.superseded[path]
    return due


def _mtime(info: dict, default: float) -> float:
    mtime = info.get("mtime") or info.get("LastModified")
    if mtime is None:
        return default
    return mtime.timestamp() if hasattr(mtime, "timestamp") else float(mtime)
