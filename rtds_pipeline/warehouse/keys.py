"""The dedupe keys of the hot days: an embedded key-value store (RocksDB), one column family a day.

Copies of an event carry its `occurred`, so an id's copies meet in its occurred day: a load only
needs the keys of the days its window touches, and finds each by a point lookup (a Bloom filter
in every SST file answers most misses from memory), never by a scan. The cost of a probe follows
the window, not the day and not the history (BENCHMARKS.md, "The dedupe keys").

A key is the 128-bit MD5 of the id, as two unsigned 64-bit halves (`key_hi`, `key_lo` in the
SQL), stored big-endian; its value is the kept copy's stream position, the load batch that wrote
it and its source. A day's column family is created by the first load that keeps an id of that
day and dropped, whole, once the day falls behind the horizon: the store holds the hot days
only, whatever the history. Writes are synced (the write-ahead log) before the caller records
the batch, and a key written by the batch being retried counts as that batch's own.

Plain Python over RocksDB (`rocksdict`) and pyarrow: imports nothing of ours.
"""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from rocksdict import (
    BlockBasedOptions,
    DBCompressionType,
    Options,
    Rdict,
    WriteBatch,
    WriteOptions,
)

PREFIX = "day="  # a column family per day: day=YYYY-MM-DD
VALUE = struct.Struct("<QQ")  # pos, batch; the source's name follows
HITS = pa.schema([("day", pa.date32()), ("h", pa.uint64()), ("l", pa.uint64()),
                  ("kept_pos", pa.uint64()), ("kept_batch", pa.int64()),
                  ("kept_source", pa.string())])


def _options() -> Options:
    opts = Options(raw_mode=True)
    opts.create_if_missing(True)
    table = BlockBasedOptions()
    table.set_bloom_filter(10, False)  # ~1 % false positives: a miss rarely reads a block
    table.set_block_size(4096)
    opts.set_block_based_table_factory(table)
    opts.set_compression_type(DBCompressionType.lz4())  # values repeat (batch, source); keys do not
    opts.set_db_write_buffer_size(64 << 20)  # memtables of all days together
    opts.set_keep_log_file_num(2)
    opts.set_max_log_file_size(8 << 20)
    return opts


def encode(h: np.ndarray, lo: np.ndarray) -> list[bytes]:
    """The store's keys of the (h, l) halves: 16 bytes, big-endian."""
    raw = np.column_stack([h, lo]).astype(">u8").tobytes()
    return [raw[i:i + 16] for i in range(0, len(raw), 16)]


class KeyStore:
    """The keys of the hot days of one table, in `path` (a RocksDB directory)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        opts = _options()
        families = ({name: _options() for name in Rdict.list_cf(str(self.path), opts)}
                    if (self.path / "CURRENT").exists() else {})
        self.db = Rdict(str(self.path), opts, column_families=families)
        self._synced = WriteOptions()
        self._synced.sync = True

    def close(self) -> None:
        self.db.close()

    # -- days --

    def days(self) -> list[dt.date]:
        return sorted(dt.date.fromisoformat(n[len(PREFIX):])
                      for n in Rdict.list_cf(str(self.path), _options()) if n.startswith(PREFIX))

    def _family(self, day: dt.date, create: bool) -> Rdict | None:
        name = f"{PREFIX}{day.isoformat()}"
        try:
            return self.db.get_column_family(name)
        except Exception:  # noqa: BLE001  (rocksdict raises a bare Exception for a missing one)
            return self.db.create_column_family(name, _options()) if create else None

    def drop_days(self, days: Iterable[dt.date]) -> None:
        """Forget whole days (behind the horizon, or about to be written anew by a rebuild)."""
        have = set(self.days())
        for day in days:
            if day in have:
                self.db.drop_column_family(f"{PREFIX}{day.isoformat()}")

    def drop_before(self, floor: dt.date) -> list[dt.date]:
        old = [d for d in self.days() if d < floor]
        self.drop_days(old)
        return old

    # -- probe and write --

    def probe(self, keys: pa.Table) -> pa.Table:
        """The kept copies of `keys` (columns day, h, l): one row per key found in its own day."""
        out: dict[str, list] = {f.name: [] for f in HITS}
        hs = keys["h"].to_numpy(zero_copy_only=False)
        ls = keys["l"].to_numpy(zero_copy_only=False)
        for day, at in _by_day(keys).items():
            family = self._family(day, create=False)
            if family is None:
                continue
            wanted: list[Any] = encode(hs[at], ls[at])
            found = family.get(wanted) or []
            for i, value in zip(at, found, strict=True):
                if value is None:
                    continue
                pos, batch = VALUE.unpack_from(value)
                out["day"].append(day)
                out["h"].append(int(hs[i]))
                out["l"].append(int(ls[i]))
                out["kept_pos"].append(pos)
                out["kept_batch"].append(batch)
                out["kept_source"].append(value[VALUE.size:].decode())
        return pa.table(out, schema=HITS)

    def put(self, rows: pa.Table, batch: int) -> int:
        """Record kept copies (columns day, h, l, pos, source) as written by `batch`: one synced
        write for all their days. Returns how many."""
        if not rows.num_rows:
            return 0
        wb = WriteBatch(raw_mode=True)
        hs = rows["h"].to_numpy(zero_copy_only=False)
        ls = rows["l"].to_numpy(zero_copy_only=False)
        pos = rows["pos"].to_pylist()
        sources = [s.encode() for s in rows["source"].to_pylist()]
        for day, at in _by_day(rows).items():
            self._family(day, create=True)
            handle = self.db.get_column_family_handle(f"{PREFIX}{day.isoformat()}")
            for i, key in zip(at, encode(hs[at], ls[at]), strict=True):
                wb.put(key, VALUE.pack(pos[i], batch) + sources[i], handle)
        self.db.write(wb, self._synced)
        return rows.num_rows

    def count(self, day: dt.date) -> int:
        """Keys held for a day (a scan of its keys: for checks and tests, not for loads)."""
        family = self._family(day, create=False)
        return 0 if family is None else sum(1 for _ in family.keys())


_OPEN: dict[Path, KeyStore] = {}


def shared(path: Path) -> KeyStore:
    """The process's one open store at `path` (RocksDB locks its directory: one opener)."""
    path = path.absolute()
    if path not in _OPEN:
        _OPEN[path] = KeyStore(path)
    return _OPEN[path]


def close_under(root: Path) -> None:
    """Close the shared stores under `root` (the writer is done with them)."""
    root = root.absolute()
    for path in [p for p in _OPEN if p.is_relative_to(root)]:
        _OPEN.pop(path).close()


def _by_day(rows: pa.Table) -> dict[dt.date, np.ndarray]:
    """The row numbers of each day of `rows`."""
    out: dict[dt.date, list[int]] = {}
    for i, day in enumerate(rows["day"].to_pylist()):
        out.setdefault(day, []).append(i)
    return {d: np.asarray(at, dtype=np.int64) for d, at in out.items()}
