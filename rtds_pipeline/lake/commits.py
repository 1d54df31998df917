"""The commit log: the single source of truth for what is landed and where to resume.

A file no commit lists does not exist for readers (`lake.live.live_files` and
`rtds-pipeline lake files` give the committed view; orphans are removed by `lake.live`).

Records live at `_commits/source=<key>/<seq:010d>.json`, one per sequence number, numbered
1, 2, 3 … without gaps. Each record has a `kind`:

- `"window"` (the default, also for records written before `kind` existed): a window read from
  the stream. Its `files` are new data; `resume_offset` is where the next window starts.
- `"compaction"`: `files` are new, larger files holding exactly the rows of the files listed in
  `replaces` (paths relative to the lake root), which it supersedes; not new data. It carries
  the `resume_offset` of the record before it: it does not move the stream.
- `"reset"`: no files; moves `resume_offset` (to None: the source starts again from its `start`)
  after an operator chose to, e.g. when the stream's head is behind the committed offset.

Interfaces (what the warehouse and the other writers rely on):

- `CommitLog.write(commit)` creates record `commit.window_seq` only if it is absent, atomically:
  locally by `os.link` of a fully written temporary file (fails if the name exists), on S3 by a
  conditional PUT (`If-None-Match: *`). Checked once per store: a store that ignores the
  condition raises `ExclusiveWriteUnsupported` instead of committing unsafely. The loser of a
  race gets `CommitConflict`, after its commit's data files were deleted.
- `CommitLog.since(seq)` reads the records after `seq` in order by probing seq+1, seq+2 … until
  one is absent: O(new records), no listing.
- `CommitLog.latest()` reads the advisory pointer `_latest` (a sequence number), then probes
  forward from it: O(1) reads plus the records the pointer lags behind. Without a pointer (a lake
  written before it existed) it lists the folder once.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import threading
import uuid

import orjson

from rtds_pipeline.lake.storage import Lake

WINDOW, COMPACTION, RESET = "window", "compaction", "reset"
LATEST_POINTER = "_latest"


class CommitConflict(FileExistsError):
    """Another writer created this commit record first: it owns the source."""


class ExclusiveWriteUnsupported(RuntimeError):
    """The object store ignores conditional writes: commits could silently replace each other."""


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
    window_seq: int  # the record's sequence number in the log
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
    kind: str = WINDOW  # "window" | "compaction" | "reset"
    replaces: list[str] = dataclasses.field(default_factory=list)  # compaction: superseded paths

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


_conditional_put_checked: set[tuple[str, str]] = set()
_check_lock = threading.Lock()


class CommitLog:
    """The commits of one source (and subset) in a lake."""

    def __init__(self, lake: Lake, source: str) -> None:
        self.lake = lake
        self.source = source
        self.dir = lake.path("_commits", f"source={source}")

    def _name(self, seq: int) -> str:
        return f"{self.dir}/{seq:010d}.json"

    # ------------------------------------------------------------------ reading
    def read(self, seq: int) -> Commit:
        return Commit.from_json(self.lake.fs.cat_file(self._name(seq)))

    def _try_read(self, seq: int) -> Commit | None:
        try:
            return self.read(seq)
        except FileNotFoundError:
            return None

    def since(self, seq: int) -> list[Commit]:
        """The records after `seq`, in order: probes seq+1, seq+2 … until one is absent."""
        out: list[Commit] = []
        while (commit := self._try_read(seq + 1 + len(out))) is not None:
            out.append(commit)
        return out

    def latest(self) -> Commit | None:
        """The newest record: the advisory pointer, verified by probing forward."""
        start = self._pointer()
        if start is None:
            seqs = self.sequences()  # no pointer yet: one listing
            start = seqs[-1] if seqs else 0
        last = self._try_read(start) if start else None
        if start and last is None:  # the pointer is ahead of the log (a lake copied in part)
            seqs = self.sequences()
            start = seqs[-1] if seqs else 0
            last = self._try_read(start) if start else None
        newer = self.since(start)
        return newer[-1] if newer else last

    def _pointer(self) -> int | None:
        try:
            raw = self.lake.fs.cat_file(f"{self.dir}/{LATEST_POINTER}")
            return int(raw.strip())
        except (FileNotFoundError, ValueError):
            return None

    def sequences(self) -> list[int]:
        """Every sequence number, by listing the folder: for tools, never on a window's path."""
        try:
            names = self.lake.fs.ls(self.dir, detail=False, refresh=True)
        except FileNotFoundError:
            return []
        stems = (n.rsplit("/", 1)[-1][:-5] for n in names if n.endswith(".json"))
        return sorted(int(s) for s in stems if s.isdigit())

    def all(self) -> list[Commit]:
        return self.since(0)

    # ------------------------------------------------------------------ writing
    def write(self, commit: Commit, *, discard_on_conflict: bool = True) -> None:
        """Create record `commit.window_seq` if it is absent, atomically; its files must already
        be durable. Raises `CommitConflict` if another writer created it first, after deleting
        the commit's files (unless `discard_on_conflict=False`: the caller retries or cleans)."""
        final = self._name(commit.window_seq)
        data = commit.to_json()
        try:
            if self.lake.is_local:
                _create_local(final, data)
            else:
                self._check_conditional_put()
                _create_remote(self.lake, final, data)
        except FileExistsError:
            if discard_on_conflict:
                self.discard(commit)
            raise CommitConflict(
                f"commit {commit.window_seq} of source {self.source!r} already exists: another "
                f"writer owns this source ({final}). Run one reader per source and subset; this "
                "one stops and has removed the files of its window.") from None
        self._set_pointer(commit.window_seq)

    def discard(self, commit: Commit) -> None:
        """Delete the data files of a commit that will never be written."""
        for f in (*commit.files, *commit.dead_letter_files):
            try:
                self.lake.fs.rm(self.lake.path(f.path))
            except FileNotFoundError:
                pass

    def _set_pointer(self, seq: int) -> None:
        """Advisory: a stale or lost pointer only costs a few probes (`latest` verifies it)."""
        try:
            path = f"{self.dir}/{LATEST_POINTER}"
            if self.lake.is_local:
                tmp = f"{self.dir}/.{LATEST_POINTER}.{uuid.uuid4().hex}.tmp"
                with open(tmp, "wb") as f:
                    f.write(b"%d\n" % seq)
                os.replace(tmp, path)
            else:
                self.lake.fs.pipe_file(path, b"%d\n" % seq)
        except OSError:
            pass

    def _check_conditional_put(self) -> None:
        """Once per store and process: a second create-if-absent of one key must fail."""
        key = (repr(getattr(self.lake.fs, "storage_options", "")), self.lake.root)
        with _check_lock:
            if key in _conditional_put_checked:
                return
            probe = self.lake.path("_commits", f".probe-{uuid.uuid4().hex}")
            _create_remote(self.lake, probe, b"1")
            try:
                _create_remote(self.lake, probe, b"2")
            except FileExistsError:
                _conditional_put_checked.add(key)
                return
            finally:
                self.lake.fs.rm(probe)
            raise ExclusiveWriteUnsupported(
                f"the object store at {self.lake.url} ignores conditional writes "
                "(PUT with If-None-Match: *), so two writers could replace each other's commits. "
                "Use a store that honours them (AWS S3, SeaweedFS, MinIO, Cloudflare R2, GCS via "
                "its S3 API) for the lake.")


def _create_local(final: str, data: bytes) -> None:
    """Write aside and fsync, then hard-link to the final name: `link` fails if the name exists,
    so two writers can never both succeed (a rename would silently replace)."""
    folder = os.path.dirname(final)
    os.makedirs(folder, exist_ok=True)
    tmp = f"{folder}/.{os.path.basename(final)}.{uuid.uuid4().hex}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, final)
    finally:
        os.unlink(tmp)
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create_remote(lake: Lake, path: str, data: bytes) -> None:
    """One conditional PUT (If-None-Match: *): whole or absent, and only if absent."""
    try:
        lake.fs.pipe_file(path, data, mode="create")
    except FileExistsError:
        raise
    except OSError as exc:  # s3fs maps a 412 without its Condition header to EINVAL
        code = getattr(exc.__cause__, "response", {}).get("Error", {}).get("Code")
        if exc.errno == errno.EINVAL and code == "PreconditionFailed":
            raise FileExistsError(path) from exc
        raise


def write_after_compactions(log: CommitLog, commit: Commit, retried: bool = False) -> None:
    """Commit at `commit.window_seq`; if a compaction record took that number meanwhile (it
    moves no offset), at the next free one. The rows keep the sequence they were read as, which
    still orders them after every earlier window. Any other winner is a second writer: this
    window's files are deleted and `CommitConflict` raised."""
    while True:
        try:
            log.write(commit, discard_on_conflict=False)
            return
        except CommitConflict:
            taken = log.since(commit.window_seq - 1)
            if retried and taken and taken[0] == commit:
                return  # our own earlier attempt landed before its answer was lost
            if not taken or any(c.kind != COMPACTION for c in taken):
                log.discard(commit)
                raise
            commit.window_seq = taken[-1].window_seq + 1
