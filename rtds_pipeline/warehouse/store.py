"""The DuckDB warehouse file: one writer at a time, readers never locked out.

The event rows live in the lake as Delta tables (`warehouse/delta.py`); the pipeline's own state
(the landing manifest, the marts) lives in a private DuckDB file,
`.warehouse/<name>.duckdb`, guarded by a lock file so only one writer runs even outside
Dagster's pool. After each successful write the pipeline publishes `warehouse.duckdb` for
readers: a new small file holding views over the Delta tables' current files, the marts and the
manifests, renamed atomically over the old one. Publishing never copies event data, and patches
the marts by the keys that changed (two files take turns, see `Warehouse._publish`), so its cost
does not grow with the number of events. A reader that has an old snapshot open keeps reading it
(its files stay until `vacuum`'s retention has passed); the next open sees the new one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import duckdb

from rtds_pipeline.lake.storage import Lake
from rtds_pipeline.warehouse import keys, rowmap
from rtds_pipeline.warehouse.sqlscripts import meta, set_meta, transaction

LAYOUT = "6"  # the dedupe keys in per-day key stores; bump when the writer's file must be started anew

# The writer's tables that stay private: large (the staging) or bookkeeping only.
PRIVATE = ("landing_files", "load_batches",
           "warehouse_meta", "stg_events", "stg_removed", "mart_watermarks", "publish_log",
           "publish_marks", "row_maps")
# Published bookkeeping that only grows, a row per window or per load and day: a publish appends
# the rows added since the snapshot it brings up to date, and rewrites the rows that snapshot
# showed unfinished (the condition: a window not loaded yet), instead of copying the table.
GROWING: dict[str, tuple[str, str] | None] = {
    "landing_windows": ("load_batch IS NULL", "source, window_seq"),  # unfinished rows, their key
    "load_log": None,
}
SNAPSHOT = "warehouse_snapshot"  # in a published file: which publish it shows, and when


class WarehouseBusy(RuntimeError):
    """Another process holds the writer lock."""


class Warehouse:
    def __init__(self, path: str | os.PathLike[str], lake: Lake, *,
                 memory_limit: str | None = None, threads: int | None = None,
                 hot_hours: float | None = None) -> None:
        self.path = Path(path).absolute()
        self.lake = lake
        self.private_dir = self.path.parent / ".warehouse"
        self.writer_path = self.private_dir / self.path.name  # the writer's state
        self.lock_path = self.private_dir / f"{self.path.name}.lock"
        self.keys_dir = self.private_dir / f"{self.path.name}.keys"  # one key store per table
        self.hot_hours = hot_hours
        self.memory_limit = memory_limit
        self.threads = threads

    @contextlib.contextmanager
    def writer(self, *, wait_s: float = 600.0,
               publish: bool = True) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-write connection to the writer's file; publishes a snapshot on success."""
        from rtds_pipeline.warehouse import events

        self.private_dir.mkdir(parents=True, exist_ok=True)
        with _exclusive(self.lock_path, wait_s):
            con = self._connect()
            try:
                con.execute("SET enable_progress_bar = false")  # run logs, not a terminal
                con.execute(f"SET VARIABLE {rowmap.VARIABLE} = ?", [str(self.private_dir / "rowmaps")])
                con.execute(f"SET VARIABLE {events.KEYS_VARIABLE} = ?", [str(self.keys_dir)])
                rowmap.prepare(con)
                if not self.lake.is_local:
                    con.register_filesystem(self.lake.fs)
                events.prepare(con)
                if con.execute("SELECT count(*) FROM warehouse_meta").fetchall()[0][0] == 0:
                    # A new state: tables the lake may hold are not trusted without their keys.
                    events.forget_tables(self.lake)
                    shutil.rmtree(self.keys_dir, ignore_errors=True)
                    con.execute("INSERT INTO warehouse_meta VALUES ('layout', ?), ('state', ?)",
                                [LAYOUT, uuid.uuid4().hex])
                if self.hot_hours is not None:
                    set_meta(con, "hot_hours", self.hot_hours)
                events.refresh_views(con, self.lake)
                yield con
                events.refresh_views(con, self.lake)
                con.execute("CHECKPOINT")
                if publish:
                    self._publish(con)
            finally:
                keys.close_under(self.keys_dir)
                con.close()

    def _connect(self) -> duckdb.DuckDBPyConnection:
        """The writer's file. One of an older layout (events as DuckDB tables) is set aside as
        `<name>.old-<time>` and a new one started: the tables are recomputed from the landing."""
        if self.writer_path.exists():
            con = duckdb.connect(str(self.writer_path), config=self._config())
            has_meta = con.execute("SELECT count(*) FROM duckdb_tables() "
                                   "WHERE table_name = 'warehouse_meta'").fetchall()[0][0]
            layout = con.execute("SELECT value FROM warehouse_meta WHERE key = 'layout'"
                                 ).fetchall() if has_meta else []
            if layout == [(LAYOUT,)]:
                return con
            con.close()
            os.replace(self.writer_path, self.writer_path.with_name(
                f"{self.path.name}.old-{time.strftime('%Y%m%dT%H%M%S')}"))
        return duckdb.connect(str(self.writer_path), config=self._config())

    def _publish(self, con: duckdb.DuckDBPyConnection) -> None:
        """Publish the writer's state as `warehouse.duckdb` for readers, at a cost that does not
        grow with the marts: two files take turns. The one published before the current one (the
        spare, `.warehouse/<name>.spare`) is brought up to date in place — each mart patched:
        the keys its refreshes since that snapshot recomputed deleted, and the rows they computed
        inserted (`publish_keys_<mart>`, `publish_rows_<mart>`, recorded by `marts.refresh` under
        the publish they await), or copied whole after a full refresh — and
        renamed over the target; the current one becomes the spare. Views over the lake's tables
        and the small tables are written anew each time; the bookkeeping that grows with every
        window (GROWING: `landing_windows`, `load_log`) is appended to. A spare that a reader
        still holds open (DuckDB's file lock, or a connection of this process) is left to that
        reader: the current snapshot is then copied as a file and patched instead, once."""
        from rtds_pipeline.warehouse import events

        published = pending_publish(con) - 1
        spare = self.private_dir / f"{self.path.name}.spare"
        tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}.tmp")
        target, base = self._attach_base(con, spare, tmp, published)
        maps = rowmap.published(con, base, published + 1)  # the target's row maps, as patched
        try:
            try:
                with transaction(con):
                    self._fill(con, base, published + 1, maps)
                con.execute("CHECKPOINT publish")  # nothing left in a WAL beside the file
            finally:
                con.execute("DETACH publish")
            pub = duckdb.connect(str(target))
            try:
                if not self.lake.is_local:
                    pub.register_filesystem(self.lake.fs)
                for table in events.TABLES.values():
                    view = events.view_sql(pub, self.lake, table, f"{table}_late_copies")
                    pub.execute(f"CREATE OR REPLACE VIEW {table} AS {view}")
            finally:
                pub.close()
            if self.path.exists():  # the current snapshot becomes the spare
                os.link(self.path, tmp.with_suffix(".next-spare"))
                os.replace(target, self.path)
                os.replace(tmp.with_suffix(".next-spare"), spare)
            else:
                os.replace(target, self.path)
        finally:
            tmp.unlink(missing_ok=True)
            tmp.with_suffix(".next-spare").unlink(missing_ok=True)
        con.execute("INSERT OR REPLACE INTO warehouse_meta VALUES ('published', ?)",
                    [str(published + 1)])
        rowmap.keep_published(con, maps, [published, published + 1])  # the two files' maps
        for table in GROWING:  # where the patches of this snapshot will append from
            con.execute("DELETE FROM publish_marks WHERE publish = ? AND table_name = ?",
                        [published + 1, table])
            con.execute(f"INSERT INTO publish_marks SELECT ?, ?, coalesce(max(rowid) + 1, 0) "
                        f"FROM {table}", [published + 1, table])
        # The spare now shows publish `published`: what it needs next is kept, the rest dropped.
        for table in _patch_tables(con):
            con.execute(f"DELETE FROM {table} WHERE publish <= ?", [published])
        con.execute("DELETE FROM publish_marks WHERE publish < ?", [published])

    def _attach_base(self, con: duckdb.DuckDBPyConnection, spare: Path, tmp: Path,
                     published: int) -> tuple[Path, int | None]:
        """Attach as `publish` the file to bring up to date; returns its path and the publish it
        shows when the recorded patches reach from it (None: everything is copied). The spare
        when it shows publish `published` − 1 or later of this writer state and nobody holds
        it; else a copy of the current snapshot; else (the first publish) a new file."""
        if spare.exists() and not _open_here(spare):
            try:
                con.execute(f"ATTACH '{spare}' AS publish")
            except duckdb.Error:  # a reader holds it (DuckDB locks the files it opens), or broken
                pass
            else:
                base = _snapshot_of(con, published)
                if base is not None:
                    return spare, base
                con.execute("DETACH publish")
        if self.path.exists():
            shutil.copyfile(self.path, tmp)
        con.execute(f"ATTACH '{tmp}' AS publish (STORAGE_VERSION 'v1.2.0')")
        return tmp, _snapshot_of(con, published)

    def _fill(self, con: duckdb.DuckDBPyConnection, base: int | None, publish: int,
              maps: str) -> None:
        """Bring the attached `publish` file, which shows publish `base` (None: unknown), to the
        writer's state as publish number `publish`; its marts' keys are found through their row
        maps (`maps`: their bookkeeping, see rowmap.published)."""
        def names(db: str) -> set[str]:
            return {t for (t,) in con.execute(
                "SELECT table_name FROM duckdb_tables() WHERE database_name = ? "
                "AND schema_name = 'main' AND NOT temporary", [db]).fetchall()}

        private = set(PRIVATE) | set(_patch_tables(con))
        tables = names(con.execute("SELECT current_database()").fetchall()[0][0]) - private
        old = names("publish") - {SNAPSHOT}
        marts = {m for (m,) in con.execute("SELECT mart FROM main.mart_freshness").fetchall()
                 } if "mart_freshness" in tables else set()
        whole = {m for (m,) in con.execute(
            "SELECT DISTINCT mart FROM publish_log WHERE publish > ?", [base or 0]).fetchall()}
        for table in sorted(old - tables):
            con.execute(f'DROP TABLE publish."{table}"')
        for table in sorted(tables):
            if table in GROWING and base is not None and table in old \
                    and _append_since(con, table, base):
                continue
            keys = f"publish_keys_{table}"
            if base is not None and table in marts and table in old and table not in whole:
                if keys not in private:
                    continue  # never refreshed incrementally, nor rebuilt, since `base`
                # Each key recomputed since `base`, as its latest recompute left it.
                latest = (f"(SELECT k, max(publish) AS p FROM main.{keys} WHERE publish > {base} "
                          "GROUP BY k)")
                rowmap.delete_keys(con, rowmap.Table(table, _key_column(table), "publish",
                                                     publish, maps), f"SELECT k FROM {latest}")
                con.execute(f'INSERT INTO publish."{table}" SELECT r.* EXCLUDE (publish) '
                            f"FROM main.publish_rows_{table} r JOIN {latest} l "
                            f"ON r.{_key_column(table)} = l.k AND r.publish = l.p")
                continue
            con.execute(f'CREATE OR REPLACE TABLE publish."{table}" AS SELECT * FROM main."{table}"')
            rowmap.forget(con, rowmap.Table(table, "", "publish", publish, maps))
        con.execute(f"CREATE OR REPLACE TABLE publish.{SNAPSHOT} AS SELECT ?::BIGINT AS publish, "
                    "now() AS published_at, ? AS writer_state", [publish, meta(con, "state")])

    def reader(self) -> duckdb.DuckDBPyConnection:
        """A read-only connection to the published snapshot."""
        if not self.path.exists():
            raise FileNotFoundError(
                f"no warehouse at {self.path} yet: run the pipeline (`make run`) or materialize "
                "the `events` asset first")
        con = duckdb.connect(str(self.path), read_only=True)
        if not self.lake.is_local:
            con.register_filesystem(self.lake.fs)
        return con

    def _config(self) -> dict[str, str | bool | int | float | list[str]]:
        # Storage format of DuckDB 1.2: the analyst's own DuckDB client need not be 2.0 (the only
        # CLI on PyPI, duckdb-cli 1.5, cannot open a file in 2.0's format; same size and speed).
        # DuckDB picks each column's compression: forced zstd (kept from when the raw JSON
        # lived here) cost ~3x on the scans of the loads.
        config: dict[str, str | bool | int | float | list[str]] = {"storage_compatibility_version": "v1.2.0"}
        if self.memory_limit:
            config["memory_limit"] = self.memory_limit
        if self.threads:
            config["threads"] = self.threads
        return config


@contextlib.contextmanager
def _exclusive(path: Path, wait_s: float) -> Iterator[None]:
    with open(path, "a+") as f:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise WarehouseBusy(
                        f"another process has been writing the warehouse for {wait_s:.0f} s "
                        f"(lock {path}); wait for it to finish, or stop it") from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def pending_publish(con: duckdb.DuckDBPyConnection) -> int:
    """The number of the next publish (what a change made now will be published under)."""
    return int(meta(con, "published") or 0) + 1


def _patch_tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The writer's record of what changed per publish: `publish_log` (marts rebuilt whole),
    `publish_keys_<mart>` and `publish_rows_<mart>` (the keys an incremental refresh recomputed,
    and the rows it computed for them)."""
    return [t for (t,) in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
        "AND NOT temporary AND (table_name = 'publish_log' "
        "OR starts_with(table_name, 'publish_keys_') OR starts_with(table_name, 'publish_rows_'))"
    ).fetchall()]


def _append_since(con: duckdb.DuckDBPyConnection, table: str, base: int) -> bool:
    """Bring `publish.<table>` (one of GROWING), as publish `base` left it, up to the writer's
    by appending: the rows added since (row ids from base's mark on: the writer never deletes
    from these tables), and again those base showed unfinished. False when that cannot be done
    (no mark for base, other columns) or the row counts then differ: the caller copies the
    table."""
    mark = con.execute("SELECT next_row FROM publish_marks WHERE publish = ? AND table_name = ?",
                       [base, table]).fetchall()
    columns = ("SELECT list(column_name || ' ' || data_type ORDER BY column_index) "
               "FROM duckdb_columns() WHERE database_name = ? AND schema_name = 'main' "
               "AND table_name = ?")
    here = con.execute("SELECT current_database()").fetchall()[0][0]
    if not mark or (con.execute(columns, [here, table]).fetchall()
                    != con.execute(columns, ["publish", table]).fetchall()):
        return False
    new_rows = f"rowid >= {mark[0][0]}"
    if (rewrite := GROWING[table]) is not None:
        unfinished, key = rewrite
        # Each row base showed unfinished is in the writer still (finished since, or not yet).
        new_rows += (f" OR (rowid < {mark[0][0]} AND ({key}) IN "
                     f"(SELECT {key} FROM publish.{table} WHERE {unfinished}))")
        con.execute(f"CREATE OR REPLACE TEMP TABLE growing_rows AS "
                    f"SELECT * FROM main.{table} WHERE {new_rows}")
        con.execute(f"DELETE FROM publish.{table} WHERE {unfinished}")
        con.execute(f"INSERT INTO publish.{table} SELECT * FROM growing_rows")
    else:
        con.execute(f"INSERT INTO publish.{table} SELECT * FROM main.{table} WHERE {new_rows}")
    counts = con.execute(f"SELECT (SELECT count(*) FROM main.{table}), "
                         f"(SELECT count(*) FROM publish.{table})").fetchall()[0]
    return counts[0] == counts[1]


def _snapshot_of(con: duckdb.DuckDBPyConnection, published: int) -> int | None:
    """The publish the attached `publish` file shows, if the recorded patches reach from it: one
    of this writer state's, `published` − 1 or later (None: a new file, one of another state or
    of before the files took turns, or one too old)."""
    if not con.execute("SELECT count(*) FROM duckdb_tables() WHERE database_name = 'publish' "
                       "AND table_name = ?", [SNAPSHOT]).fetchall()[0][0]:
        return None
    row = con.execute(f"SELECT publish, writer_state FROM publish.{SNAPSHOT}").fetchall()
    if not row or row[0][1] != meta(con, "state") or row[0][0] not in (published - 1, published):
        return None
    return row[0][0]


def _key_column(table: str) -> str:
    from rtds_pipeline.warehouse.marts import BY_NAME

    return BY_NAME[table].unique_key


def _open_here(path: Path) -> bool:
    """Does this process hold the file open (a reader's connection: DuckDB's lock does not
    exclude the process that holds it)? Unknown (no /proc) counts as yes."""
    try:
        st = path.stat()
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return True
    for fd in fds:
        try:
            other = os.stat(f"/proc/self/fd/{fd}")
            if (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino):
                return True
        except OSError:
            continue
    return False
