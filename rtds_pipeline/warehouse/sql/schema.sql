-- The warehouse writer's own tables (data/.warehouse/writer.duckdb). Applied (idempotently)
-- every time the writer opens the file. The event rows themselves live in the lake, as Delta
-- tables (warehouse/delta.py); this file keeps what the loads need to stay O(window).

CREATE TABLE IF NOT EXISTS warehouse_meta (key VARCHAR PRIMARY KEY, value VARCHAR);

-- What each publish of warehouse.duckdb must bring an older snapshot up to (warehouse/store.py):
-- the marts rebuilt whole, by publish number; the keys an incremental refresh recomputed and the
-- rows it computed are in publish_keys_<mart> / publish_rows_<mart> (warehouse/marts.py). Kept
-- until the spare snapshot shows them.
CREATE TABLE IF NOT EXISTS publish_log (publish BIGINT, mart VARCHAR);

-- Where a publish appends from, for the published tables that only grow (GROWING in
-- warehouse/store.py): the writer's next row id of each, at each publish. Kept until the spare
-- snapshot shows that publish.
CREATE TABLE IF NOT EXISTS publish_marks (publish BIGINT, table_name VARCHAR, next_row BIGINT);

-- Manifest of committed landing files, synced incrementally from the commit records in the
-- lake (records are immutable, so only new window_seq values are read). Lineage for every row.
CREATE TABLE IF NOT EXISTS landing_windows (
    source        VARCHAR NOT NULL,   -- source key (name, or name-p<i>of<n> for a PARTITION)
    kind          VARCHAR NOT NULL,   -- events | compliance: the table it feeds
    window_seq    BIGINT  NOT NULL,
    events        BIGINT,
    dead_letters  BIGINT,
    first_offset  VARCHAR,
    resume_offset VARCHAR,
    max_processed TIMESTAMPTZ,        -- newest `processed` the window saw
    committed_at  TIMESTAMPTZ,
    stop_reason   VARCHAR,
    load_batch    BIGINT              -- the load that put its rows in the table; NULL: pending
);

CREATE TABLE IF NOT EXISTS landing_files (
    source     VARCHAR NOT NULL,
    kind       VARCHAR NOT NULL,
    window_seq BIGINT  NOT NULL,
    path       VARCHAR NOT NULL,      -- URL DuckDB reads: absolute path or s3://bucket/key
    day        VARCHAR NOT NULL,      -- occurred date (UTC); 'dead_letter' for dead letters
    rows       BIGINT,
    bytes      BIGINT
);

-- Every load of a table: `planned` before its Delta commit (which carries `batch` as its
-- application transaction version), `done` once the keys below match. A planned batch found
-- at start is redone with the same windows or days: exactly once in the Delta table.
CREATE TABLE IF NOT EXISTS load_batches (
    table_name VARCHAR NOT NULL,
    batch      BIGINT  NOT NULL,
    mode       VARCHAR NOT NULL,      -- window | rebuild | compact
    days       VARCHAR[],             -- rebuild / compact: the days replaced
    state      VARCHAR NOT NULL,      -- planned | done
    started_at TIMESTAMPTZ,
    rows       BIGINT                 -- rows written to the Delta table
);

-- Days behind the horizon that committed windows brought rows of (late devices): not loaded by
-- the window loads, whose keys cover the hot days only, but rebuilt from the landing zone by the
-- maintenance job (`fold_in_cold`), which deletes their rows here.
CREATE TABLE IF NOT EXISTS cold_days (
    table_name VARCHAR NOT NULL,
    day        DATE    NOT NULL,
    rows       BIGINT,            -- landed rows of the day one window brought
    seen_at    TIMESTAMPTZ
);

-- What each load did per day, for checks and for people.
CREATE TABLE IF NOT EXISTS load_log (
    table_name       VARCHAR,
    day              DATE,
    built_at         TIMESTAMPTZ,
    batch            BIGINT,
    mode             VARCHAR,   -- window | rebuild | compact
    landed_rows      BIGINT,    -- landed rows of the day read by this load
    rows             BIGINT,    -- rows written for the day
    copies_dropped   BIGINT     -- landed rows not written: later copies, or kept elsewhere
);

-- The columns of `events` / `compliance_events`, in order, with their types (no rows): the
-- shape of the views when a table has no data yet. See delta.py for where the rows are.
CREATE TABLE IF NOT EXISTS events_columns (
    id                     VARCHAR,
    type                   VARCHAR,
    occurred               TIMESTAMPTZ,
    processed              TIMESTAMPTZ,
    occurred_date          DATE,
    rtds_offset            VARCHAR,  -- offset of the copy kept (the first delivered)
    copies                 INTEGER,  -- copies the stream delivered into this day
    source                 VARCHAR,
    device_type            VARCHAR,
    channel                VARCHAR,
    named_user_id          VARCHAR,
    contact_id             VARCHAR,
    push_id                VARCHAR,
    group_id               VARCHAR,
    session_id             VARCHAR,
    triggering_push_id     VARCHAR,
    triggering_group_id    VARCHAR,
    last_delivered_push_id VARCHAR,
    custom_event_name      VARCHAR,
    custom_event_value     DOUBLE,
    app_version            VARCHAR,
    country                VARCHAR,
    raw                    VARCHAR   -- the event exactly as Airship sent it (JSON text)
);
