-- Per-table state of {table}, next to schema.sql's shared tables.

-- The id index: one row per id kept in {table}, keyed by the 128-bit MD5 of the id (a
-- collision needs ~2^64 ids), in two 64-bit halves. A window's ids are probed here instead of
-- scanning the table: a hash join whose build side is the window, reading only `h` of the
-- index (8 bytes a key); `l` confirms the few candidates.
CREATE TABLE IF NOT EXISTS {table}_keys (
    h             UBIGINT  NOT NULL,  -- key_hi(md5_number(id))
    l             UBIGINT  NOT NULL,  -- key_lo(md5_number(id))
    occurred_date DATE     NOT NULL,  -- the day its kept copy lives in
    pos           UBIGINT  NOT NULL,  -- offset of the kept copy (stream position)
    source        VARCHAR  NOT NULL
);

-- Copies that arrived after their id's row was written (same day): added to `copies` by the
-- views, folded into the rows when the day is compacted or rebuilt.
CREATE TABLE IF NOT EXISTS {table}_late_copies (
    id            VARCHAR NOT NULL,
    occurred_date DATE    NOT NULL,
    n             INTEGER NOT NULL
);

-- Committed rows that break the table's contract (no id, type or time; an offset that is not a
-- plain digit string) and files DuckDB cannot read: kept here with the reason, never loaded,
-- never blocking. The `quarantine` check warns while any exist.
CREATE TABLE IF NOT EXISTS {table}_quarantine (
    quarantined_at TIMESTAMPTZ,
    source         VARCHAR,
    window_seq     BIGINT,
    path           VARCHAR,
    id             VARCHAR,
    rtds_offset    VARCHAR,
    reason         VARCHAR,
    raw            VARCHAR
);
