"""Row maps: the rows of a few keys in a big DuckDB table, found without scanning the table.

A window touches a few hundred sessions anywhere in the history. Without an index, finding their
rows means scanning a 16M-row key column, and a marts refresh did that three times a window (the
staging, the writer's mart, the published spare). DuckDB's ART index is no way out: every
checkpoint writes it whole. A row map is a sorted copy of a table's key column with each row's
row id, in two `.npy` files beside the warehouse (memory-mapped: a lookup reads a few pages). It
covers the rows [0, covered) as they were when it was built; the rows appended since (the tail)
are scanned by row id, which DuckDB answers from the row groups at and above `covered` only.

Row ids in DuckDB stay put until a checkpoint vacuums deleted rows out of a row group, which
shifts every later row, and a table created anew numbers its rows from 0 again. So a map is used
only while it holds:
- its live rows below `covered`, counted by row id (cheap), are the count it expects, and the
  table still reaches `covered` (a shift moves tail rows below `covered`, or ends the table
  before it);
- a sample of its entries, and every row it finds, still hold their keys (fetched together);
- our own code drops it whenever it creates the table anew (`forget`).
Anything else rebuilds it (one sorted scan of the key column, O(table), rare), and a row found
is always checked against its key: a stale map can cost time, never delete a wrong row.

The maps' bookkeeping is the writer's table `row_maps`: one row per map, for the writer's own
tables (`db` 'main', snapshot 0) and for a published file's (`db` 'publish', snapshot: the
publish it shows, so a map follows its file as the two published files take turns). Maps are
kept only where they pay (`MIN_ROWS`) and where the writer's connection names their folder
(the variable `rtds_rowmaps`, set by `Warehouse.writer`); elsewhere the keys are found by a scan.
"""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path

import duckdb
import numpy as np

MIN_ROWS = 1_000_000  # below: a scan of the key column costs less than keeping a map
TAIL_SHARE = 4  # rebuild once the tail holds more than covered / TAIL_SHARE rows …
MIN_TAIL = 500_000  # … and more than this
SAMPLE = 32  # map entries checked on each use
ROW_GROUP = 122_880  # rows in a DuckDB row group
VARIABLE = "rtds_rowmaps"  # the folder of the map files, set on the writer's connection


@dataclasses.dataclass
class RowMap:
    file: str  # <file>.keys.npy (sorted) and <file>.rows.npy, in the maps' folder
    covered: int  # the map holds the rows with row id < covered, as of its build …
    live: int  # … and this many of them (keyed or not) are still there: not deleted since, or
    # only through `delete_keys`, which counts what it deletes


def prepare(con: duckdb.DuckDBPyConnection) -> None:
    """The writer's bookkeeping of its maps."""
    con.execute("CREATE TABLE IF NOT EXISTS row_maps (db VARCHAR, snapshot BIGINT, tbl VARCHAR, "
                "key VARCHAR, file VARCHAR, covered BIGINT, live BIGINT)")


def folder(con: duckdb.DuckDBPyConnection) -> Path | None:
    value = con.execute(f"SELECT getvariable('{VARIABLE}')").fetchall()[0][0]
    return Path(value) if value else None


@dataclasses.dataclass(frozen=True)
class Table:
    """A table whose rows are found by `key` (a UBIGINT column; other types are scanned):
    `db.name`. Its map's bookkeeping is the row of (db, snapshot, name, key) in `state` (a copy
    in a temporary table while a publish writes the published file: one DuckDB transaction
    writes one database)."""
    name: str
    key: str
    db: str = "main"
    snapshot: int = 0
    state: str = "row_maps"

    @property
    def target(self) -> str:
        return f"{self.db}.{self.name}"


def find_rows(con: duckdb.DuckDBPyConnection, table: Table, keys: str, out: str) -> None:
    """`CREATE TEMP TABLE {out} (r)`: the row ids of the table's rows whose key is one of `keys`
    (a query of k)."""
    target, key = table.target, table.key
    for _attempt in range(2):
        mapped = _usable(con, table)
        if mapped is None:
            break
        row_map, root = mapped
        try:
            sorted_keys, row_ids = _arrays(root, row_map)
        except (OSError, ValueError):  # its files are gone or torn: built anew
            forget(con, table)
            continue
        # The keys, queried once: the lookup and both halves of the answer read them.
        con.execute("CREATE OR REPLACE TEMP TABLE rowmap_wanted AS "
                    f"SELECT DISTINCT k::UBIGINT AS k FROM ({keys}) WHERE k IS NOT NULL")
        wanted = con.execute("SELECT k FROM rowmap_wanted").fetchnumpy()["k"].astype(np.uint64)
        spans = [(a, b) for a, b in zip(np.searchsorted(sorted_keys, wanted, "left"),
                                        np.searchsorted(sorted_keys, wanted, "right"), strict=True)
                 if b > a]
        # The rows found and a sample of the map's entries, fetched and checked in one go.
        at = (np.random.default_rng().integers(0, len(row_ids), SAMPLE) if len(row_ids)
              else np.empty(0, np.int64))
        candidates = np.concatenate([np.asarray(row_ids[at])] + [row_ids[a:b] for a, b in spans])
        expected = np.concatenate([np.asarray(sorted_keys[at])]
                                  + [sorted_keys[a:b] for a, b in spans])
        if _fetch_checked(con, target, key, candidates, expected):
            con.execute(f"CREATE OR REPLACE TEMP TABLE {out} AS SELECT r FROM rowmap_fetched "
                        "WHERE k IN (SELECT k FROM rowmap_wanted) "
                        f"UNION ALL SELECT rowid FROM {target} WHERE rowid >= {row_map.covered} "
                        f"AND {key} IN (SELECT k FROM rowmap_wanted)")
            return
        # A row holds another key than the map says: the map no longer holds; built anew.
        forget(con, table)
    con.execute(f"CREATE OR REPLACE TEMP TABLE {out} AS SELECT rowid AS r FROM {target} "
                f"WHERE {key} IN (SELECT k FROM ({keys}))")


def delete_keys(con: duckdb.DuckDBPyConnection, table: Table, keys: str) -> int:
    """DELETE the table's rows whose key is one of `keys`; returns how many."""
    find_rows(con, table, keys, "rowmap_doomed")
    # Every map of the table counts the rows that go from under it.
    con.execute(f"UPDATE {table.state} m SET live = live - (SELECT count(*) FROM rowmap_doomed "
                "WHERE r < m.covered) WHERE db = ? AND snapshot = ? AND tbl = ?",
                [table.db, table.snapshot, table.name])
    return con.execute(f"DELETE FROM {table.target} WHERE rowid IN (SELECT r FROM rowmap_doomed)"
                       ).fetchall()[0][0]


def forget(con: duckdb.DuckDBPyConnection, table: Table) -> None:
    """The table was created anew, or lost rows some other way (or its map is no longer
    trusted): its maps go, by whatever key."""
    con.execute(f"DELETE FROM {table.state} WHERE db = ? AND snapshot = ? AND tbl = ?",
                [table.db, table.snapshot, table.name])


def published(con: duckdb.DuckDBPyConnection, base: int | None, publish: int) -> str:
    """The maps of a published file that showed publish `base` (None: a new file), copied into a
    temporary table as the maps of publish `publish`, for the publish that writes it; returns
    that table's name (`Table.state`), for `keep_published` once the publish is done."""
    state = "publish_row_maps"
    con.execute(f"CREATE OR REPLACE TEMP TABLE {state} AS SELECT * REPLACE (?::BIGINT AS snapshot) "
                "FROM row_maps WHERE db = 'publish' AND snapshot = ?", [publish, base])
    return state


def keep_published(con: duckdb.DuckDBPyConnection, state: str, snapshots: list[int]) -> None:
    """After a publish: its file's maps (`state`) recorded, and only the maps of the published
    files that remain (`snapshots`) kept; map files no map names go."""
    con.execute(f"DELETE FROM row_maps WHERE db = 'publish' AND (NOT list_contains(?, snapshot) "
                f"OR snapshot IN (SELECT snapshot FROM {state}))", [snapshots])
    con.execute(f"INSERT INTO row_maps SELECT * FROM {state}")
    root = folder(con)
    if root is None or not root.exists():
        return
    named = {f for (f,) in con.execute("SELECT DISTINCT file FROM row_maps").fetchall()}
    for path in root.glob("*.npy"):
        if path.name.split(".")[0] not in named:
            path.unlink(missing_ok=True)


# -- internals --------------------------------------------------------------------------------

def _load(con: duckdb.DuckDBPyConnection, table: Table) -> RowMap | None:
    row = con.execute(f"SELECT file, covered, live FROM {table.state} WHERE db = ? "
                      "AND snapshot = ? AND tbl = ? AND key = ?",
                      [table.db, table.snapshot, table.name, table.key]).fetchall()
    return RowMap(*row[0]) if row else None


def _usable(con: duckdb.DuckDBPyConnection, table: Table) -> tuple[RowMap, Path] | None:
    """The table's map, built or rebuilt as needed; None where no map pays or can be kept.
    (The caller checks a sample of its entries with the rows it fetches.)"""
    root = folder(con)
    if root is None:
        return None
    row_map = _load(con, table)
    rows = _rows(con, table.target, row_map.covered - 1 if row_map else 0)
    if row_map is not None:
        if _holds(con, table, row_map, rows):
            return row_map, root
        con.execute(f"DELETE FROM {table.state} WHERE db = ? AND snapshot = ? AND tbl = ? "
                    "AND key = ?", [table.db, table.snapshot, table.name, table.key])
    if rows < max(MIN_ROWS, ROW_GROUP) or con.execute(  # (a map covers whole row groups)
            "SELECT data_type FROM duckdb_columns() WHERE schema_name = 'main' AND table_name = $t "
            "AND column_name = $k AND database_name = "
            "(CASE WHEN $db = 'main' THEN current_database() ELSE $db END)",
            {"db": table.db, "t": table.name, "k": table.key}).fetchall() != [("UBIGINT",)]:
        return None
    row_map = _build(con, table, root)
    con.execute(f"INSERT INTO {table.state} VALUES (?, ?, ?, ?, ?, ?, ?)",
                [table.db, table.snapshot, table.name, table.key, row_map.file,
                 row_map.covered, row_map.live])
    return row_map, root


def _rows(con: duckdb.DuckDBPyConnection, target: str, above: int) -> int:
    """1 + the table's last row id (0 when empty), read from the row groups from row `above` on
    where it has rows there (a filter on rowid skips the others: 0.7 ms against 5.5 ms for the
    16M rows of a table)."""
    last = None
    if above > 0:
        last = con.execute(f"SELECT max(rowid) FROM {target} WHERE rowid >= {above}").fetchall()[0][0]
    if last is None:
        last = con.execute(f"SELECT max(rowid) FROM {target}").fetchall()[0][0]
    return 0 if last is None else last + 1


def _holds(con: duckdb.DuckDBPyConnection, table: Table, row_map: RowMap, rows: int) -> bool:
    """Does the map still describe the table, as far as counting tells, and is its tail short
    enough to scan?"""
    # A vacuum that moved rows under the map moved every later row too: the first rows of the
    # tail now count below `covered` (the live count below), or, with no live tail, the table
    # ends before `covered`.
    if rows < row_map.covered or rows - row_map.covered > max(MIN_TAIL,
                                                               row_map.covered // TAIL_SHARE):
        return False
    live = con.execute(f"SELECT count(*) FROM {table.target} WHERE rowid < {row_map.covered}"
                       ).fetchall()[0][0]
    return live == row_map.live


def _fetch_checked(con: duckdb.DuckDBPyConnection, target: str, key: str, row_ids: np.ndarray,
                   keys: np.ndarray) -> bool:
    """Fetch the rows `row_ids` into `rowmap_fetched (r)` by row id (DuckDB reads only the
    vectors that hold them); True if each still holds the key the map gives it (a deleted row is
    simply not there)."""
    con.execute("CREATE OR REPLACE TEMP TABLE rowmap_candidates AS "
                "SELECT unnest(?::BIGINT[]) AS r, unnest(?::UBIGINT[]) AS want",
                [row_ids.tolist(), keys.tolist()])
    con.execute(f"CREATE OR REPLACE TEMP TABLE rowmap_fetched AS SELECT rowid AS r, {key} AS k "
                f"FROM {target} WHERE rowid IN (SELECT r FROM rowmap_candidates)")
    return con.execute("SELECT count(*) FROM rowmap_fetched f JOIN rowmap_candidates c USING (r) "
                       "WHERE f.k IS DISTINCT FROM c.want").fetchall()[0][0] == 0


def _build(con: duckdb.DuckDBPyConnection, table: Table, root: Path) -> RowMap:
    """Sort the key column with its row ids into the map's files, in batches (bounded memory).
    `live` counts the rows it covers, those without a key included."""
    root.mkdir(parents=True, exist_ok=True)
    name = f"{table.name}-{uuid.uuid4().hex[:12]}"
    # Whole row groups only: the last one, partly filled, is left to the tail. A checkpoint's
    # vacuum merges neighbouring row groups whose rows fit in fewer, and a map ending inside a
    # row group was moved under by the very next merge of the fresh rows after it.
    (last,) = con.execute(f"SELECT max(rowid) FROM {table.target}").fetchall()[0]
    covered = 0 if last is None else (last + 1) // ROW_GROUP * ROW_GROUP
    live, n = con.execute(f"SELECT count(*), count({table.key}) FROM {table.target} "
                          f"WHERE rowid < {covered}").fetchall()[0]
    sorted_keys = np.lib.format.open_memmap(root / f"{name}.keys.npy", "w+", np.uint64, (n,))
    row_ids = np.lib.format.open_memmap(root / f"{name}.rows.npy", "w+", np.int64, (n,))
    reader = con.sql(f"SELECT {table.key}::UBIGINT AS k, rowid AS r FROM {table.target} "
                     f"WHERE {table.key} IS NOT NULL AND rowid < {covered} ORDER BY k"
                     ).to_arrow_reader(1 << 20)
    at = 0
    for batch in reader:
        sorted_keys[at:at + batch.num_rows] = batch.column(0).to_numpy()
        row_ids[at:at + batch.num_rows] = batch.column(1).to_numpy()
        at += batch.num_rows
    if at != n:
        raise RuntimeError(f"row map of {table.target}: {at} keys read, {n} counted")
    sorted_keys.flush()
    row_ids.flush()
    return RowMap(name, covered, live)


def _arrays(root: Path, row_map: RowMap) -> tuple[np.ndarray, np.ndarray]:
    return (np.load(root / f"{row_map.file}.keys.npy", mmap_mode="r"),
            np.load(root / f"{row_map.file}.rows.npy", mmap_mode="r"))
