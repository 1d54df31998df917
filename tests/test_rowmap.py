"""Row maps (warehouse/rowmap.py): the rows of a few keys found without scanning the table, the
same rows a scan finds, whatever happened to the table since the map was built."""

from __future__ import annotations

import duckdb
import pytest

from rtds_pipeline.warehouse import rowmap

KEYS = "SELECT k FROM wanted"
T = rowmap.Table("t", "k")


@pytest.fixture
def con(tmp_path, monkeypatch):
    monkeypatch.setattr(rowmap, "MIN_ROWS", 0)
    monkeypatch.setattr(rowmap, "MIN_TAIL", 1_000)
    # The warehouse's storage version, whose checkpoints vacuum deleted rows (shifting row ids).
    con = duckdb.connect(str(tmp_path / "w.duckdb"),
                         config={"storage_compatibility_version": "v1.2.0"})
    con.execute(f"SET VARIABLE {rowmap.VARIABLE} = ?", [str(tmp_path / "maps")])
    rowmap.prepare(con)
    # 300k rows (three row groups), keys repeating, some without a key.
    con.execute("CREATE TABLE t AS SELECT i, CASE WHEN i % 50 = 7 THEN NULL "
                "ELSE hash(i % 100000) END AS k FROM range(300000) r(i)")
    con.execute("CREATE TABLE wanted AS SELECT hash(i * 397 % 100000) AS k FROM range(300) r(i)")
    con.execute("CHECKPOINT")
    yield con
    con.close()


def found(con, table: rowmap.Table = T) -> list[int]:
    rowmap.find_rows(con, table, KEYS, "hits")
    return sorted(r for (r,) in con.execute("SELECT r FROM hits").fetchall())


def scanned(con) -> list[int]:
    return sorted(r for (r,) in con.execute(
        f"SELECT rowid FROM t WHERE k IN ({KEYS})").fetchall())


def map_file(con) -> str | None:
    row = con.execute("SELECT file FROM row_maps WHERE tbl = 't'").fetchall()
    return row[0][0] if row else None


def test_the_map_finds_what_a_scan_finds_as_rows_come_and_go(con):
    assert found(con) == scanned(con) and len(scanned(con)) > 300
    built = map_file(con)
    assert built is not None
    con.execute("INSERT INTO t SELECT i, hash(i % 100000) FROM range(300000, 300500) r(i)")  # the tail
    assert rowmap.delete_keys(con, rowmap.Table("t", "k"), "SELECT k FROM wanted LIMIT 40") > 40
    con.execute("CHECKPOINT")
    assert found(con) == scanned(con)
    assert map_file(con) == built  # used, not rebuilt
    covered, live = con.execute("SELECT covered, live FROM row_maps").fetchall()[0]
    assert covered == 2 * rowmap.ROW_GROUP  # whole row groups: the last one is the tail's
    assert live == con.execute(f"SELECT count(*) FROM t WHERE rowid < {covered}").fetchall()[0][0]


def test_a_vacuum_that_shifts_row_ids_rebuilds_the_map(con):
    found(con)
    built = map_file(con)
    # Deleted behind the map's back, densely enough that the checkpoint vacuums the row groups
    # and every later row moves down.
    con.execute("DELETE FROM t WHERE i < 250000 AND i % 10 < 7")
    con.execute("CHECKPOINT")
    assert con.execute("SELECT max(rowid) FROM t").fetchall()[0][0] < 299_999  # rows did move
    assert found(con) == scanned(con)
    assert map_file(con) != built


def test_a_table_created_anew_in_another_order_is_not_read_through_the_old_map(con):
    found(con)
    built = map_file(con)
    con.execute("CREATE OR REPLACE TABLE t AS SELECT * FROM t ORDER BY k DESC")  # same row count
    assert found(con) == scanned(con)
    assert map_file(con) != built


def test_keys_of_another_type_and_small_tables_are_scanned(con, monkeypatch):
    con.execute("CREATE TABLE s AS SELECT i, i::VARCHAR AS k FROM range(1000) r(i)")
    rowmap.find_rows(con, rowmap.Table("s", "k"), "SELECT '5' AS k", "hits")
    assert con.execute("SELECT r FROM hits").fetchall() == [(5,)]
    monkeypatch.setattr(rowmap, "MIN_ROWS", 10**9)
    assert found(con) == scanned(con) and map_file(con) is None


def test_map_files_no_map_names_are_removed(con, tmp_path):
    found(con)
    con.execute("CREATE OR REPLACE TABLE t AS SELECT * FROM t ORDER BY k DESC")
    rowmap.forget(con, rowmap.Table("t", "k"))
    found(con)  # a new map
    state = rowmap.published(con, None, 1)
    rowmap.keep_published(con, state, [1])
    files = sorted(p.name for p in (tmp_path / "maps").iterdir())
    assert files == [f"{map_file(con)}.keys.npy", f"{map_file(con)}.rows.npy"]


def test_a_vacuum_is_seen_when_no_row_follows_the_map(con, monkeypatch):
    """The map covers the whole table; rows deleted behind its back and vacuumed shift the last
    ones down: no tail row moved below the map to count, but the table now ends before it.
    (The rows looked up now lie past its end: their map entries fetch nothing, as if deleted.
    The sampled check is off, to see this one.)"""
    monkeypatch.setattr(rowmap, "SAMPLE", 0)
    con.execute(f"CREATE OR REPLACE TABLE t AS SELECT * FROM t LIMIT {2 * rowmap.ROW_GROUP}")
    con.execute("CHECKPOINT")
    rowmap.forget(con, T)
    con.execute("CREATE OR REPLACE TABLE wanted AS SELECT k FROM t WHERE rowid >= 245000 "
                "AND k IS NOT NULL")
    assert found(con) == scanned(con)
    built = map_file(con)
    con.execute(f"DELETE FROM t WHERE rowid < {2 * rowmap.ROW_GROUP - 5000} AND i % 10 < 7")
    con.execute("CHECKPOINT")
    assert con.execute("SELECT max(rowid) FROM t").fetchall()[0][0] < 2 * rowmap.ROW_GROUP - 1
    assert found(con) == scanned(con) and len(scanned(con)) > 500
    assert map_file(con) != built


def test_a_sample_of_the_map_is_checked_with_the_rows_it_finds(con):
    """Keys changed behind the map, none of them a wanted one: the rows found are still right,
    but the sampled entries fetched with them show the map no longer holds."""
    found(con)
    built = map_file(con)
    con.execute(f"UPDATE t SET k = k + 1 WHERE i % 3 = 0 AND k NOT IN ({KEYS})")
    assert found(con) == scanned(con)
    assert map_file(con) != built


def test_a_map_whose_files_are_gone_is_built_anew(con, tmp_path):
    found(con)
    for path in (tmp_path / "maps").iterdir():
        path.unlink()
    assert found(con) == scanned(con)
    assert sorted(p.name.split(".")[0] for p in (tmp_path / "maps").iterdir()) == [map_file(con)] * 2
