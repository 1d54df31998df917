"""The DuckDB warehouse file: one writer at a time, readers never locked out.

The event rows live in the lake as Delta tables (`warehouse/delta.py`); the pipeline's own state
(the landing manifest, the id index, the marts) lives in a private DuckDB file,
`.warehouse/<name>.duckdb`, guarded by a lock file so only one writer runs even outside
Dagster's pool. After each successful write the pipeline publishes `warehouse.duckdb` for
readers: a new small file holding views over the Delta tables' current files, the marts and the
manifests, renamed atomically over the old one. Publishing never copies event data, so its cost
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

SQL_DIR = Path(__file__).parent / "sql"
LAYOUT = "4"  # events in Delta tables, the marts' staging; bump when the writer's file must be started anew

# The writer's tables that stay private: large (the id index) or bookkeeping only.
PRIVATE = ("events_keys", "compliance_events_keys", "landing_files", "load_batches",
           "warehouse_meta", "stg_events", "stg_removed", "mart_watermarks")


def sql(name: str) -> str:
    """The text of `warehouse/sql/<name>.sql`."""
    return (SQL_DIR / f"{name}.sql").read_text()


def run_script(con: duckdb.DuckDBPyConnection, script: str,
               params: dict[str, object] | None = None) -> None:
    """Run a multi-statement SQL script statement by statement (DuckDB's own parser splits it),
    binding to each statement the `$name`s it uses."""
    params = params or {}
    for statement in con.extract_statements(script):
        text = statement.query
        code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
        con.execute(text, {k: v for k, v in params.items() if f"${k}" in code})


@contextlib.contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """BEGIN … COMMIT, or ROLLBACK if the block raises."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


class WarehouseBusy(RuntimeError):
    """Another process holds the writer lock."""


class Warehouse:
    def __init__(self, path: str | os.PathLike[str], lake: Lake, *,
                 memory_limit: str | None = None, threads: int | None = None) -> None:
        self.path = Path(path).absolute()
        self.lake = lake
        self.private_dir = self.path.parent / ".warehouse"
        self.writer_path = self.private_dir / self.path.name  # the writer's state
        self.lock_path = self.private_dir / f"{self.path.name}.lock"
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
                if not self.lake.is_local:
                    con.register_filesystem(self.lake.fs)
                events.prepare(con)
                if con.execute("SELECT count(*) FROM warehouse_meta").fetchall()[0][0] == 0:
                    # A new state: tables the lake may hold are not trusted without their index.
                    events.forget_tables(self.lake)
                    con.execute("INSERT INTO warehouse_meta VALUES ('layout', ?)", [LAYOUT])
                events.refresh_views(con, self.lake)
                yield con
                events.refresh_views(con, self.lake)
                con.execute("CHECKPOINT")
                if publish:
                    self._publish(con)
            finally:
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
        """A new file beside the target, renamed over it: views over the lake's tables, and the
        writer's small tables (manifests) copied. The marts (the tables `mart_freshness` names)
        are not copied row by row each time: the previous snapshot is copied as a file and a
        mart is kept from it when this session did not refresh it, patched by its touched keys
        when the refresh was incremental and the snapshot shows the refresh the patches start from
        (temp table `publish_patches`: table, key column, table of keys, base), copied whole
        otherwise."""
        from rtds_pipeline.warehouse import events

        tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}.tmp")
        try:
            previous = self.path.exists()
            if previous:
                shutil.copyfile(self.path, tmp)
            con.execute(f"ATTACH '{tmp}' AS publish (STORAGE_VERSION 'v1.2.0')")
            try:
                self._fill(con, previous)
            finally:
                con.execute("DETACH publish")
            pub = duckdb.connect(str(tmp))
            try:
                if not self.lake.is_local:
                    pub.register_filesystem(self.lake.fs)
                for table in events.TABLES.values():
                    view = events.view_sql(pub, self.lake, table, f"{table}_late_copies")
                    pub.execute(f"CREATE OR REPLACE VIEW {table} AS {view}")
            finally:
                pub.close()
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)

    def _fill(self, con: duckdb.DuckDBPyConnection, previous: bool) -> None:
        def names(db: str) -> set[str]:
            return {t for (t,) in con.execute(
                "SELECT table_name FROM duckdb_tables() WHERE database_name = ? "
                "AND schema_name = 'main' AND NOT temporary", [db]).fetchall()}

        tables = names(con.execute("SELECT current_database()").fetchall()[0][0]) - set(PRIVATE)
        old = names("publish") if previous else set()
        fresh = dict(con.execute("SELECT mart, refreshed_at FROM main.mart_freshness").fetchall()
                     ) if "mart_freshness" in tables else {}
        shown = dict(con.execute("SELECT mart, refreshed_at FROM publish.mart_freshness"
                                 ).fetchall()) if "mart_freshness" in old else {}
        patches = {t: (k, keys, base) for t, k, keys, base in con.execute(
            "SELECT table_name, key_column, keys_table, base FROM temp.publish_patches "
            "WHERE NOT whole").fetchall()} if con.execute("SELECT count(*) FROM duckdb_tables() WHERE temporary "
                         "AND table_name = 'publish_patches'").fetchall()[0][0] else {}
        for table in sorted(old - tables):
            con.execute(f'DROP TABLE publish."{table}"')
        for table in sorted(tables):
            if table in fresh and table in old and shown.get(table) == fresh[table]:
                continue  # a mart this session did not refresh: the copied file holds it
            if table in fresh and table in old and table in patches \
                    and patches[table][2] == shown.get(table):
                key, keys, _ = patches[table]
                con.execute(f'DELETE FROM publish."{table}" WHERE {key} IN (SELECT k FROM {keys})')
                con.execute(f'INSERT INTO publish."{table}" SELECT * FROM main."{table}" '
                            f"WHERE {key} IN (SELECT k FROM {keys})")
                continue
            con.execute(f'CREATE OR REPLACE TABLE publish."{table}" AS SELECT * FROM main."{table}"')
        con.execute("DROP TABLE IF EXISTS temp.publish_patches")  # the next publish starts anew

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
        # DuckDB picks each column's compression: the id index is scanned by every load, and
        # forced zstd (kept from when the raw JSON lived here) cost ~3x on that scan.
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


def remove_tree(lake: Lake, *parts: str) -> None:
    path = lake.path(*parts)
    if lake.fs.exists(path):
        lake.fs.rm(path, recursive=True)
