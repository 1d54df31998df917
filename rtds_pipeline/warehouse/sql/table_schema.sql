-- Per-table state of {table}, next to schema.sql's shared tables.

-- The ids kept in {table} are in the key store of its hot days (warehouse/keys.py), not here.

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
