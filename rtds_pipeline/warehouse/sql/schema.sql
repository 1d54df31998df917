-- The warehouse's base tables. Applied (idempotently) every time the writer opens the file.

-- Manifest of committed landing files, synced incrementally from the commit records in the
-- lake (records are immutable, so only new window_seq values are read). Lineage for every row.
CREATE TABLE IF NOT EXISTS landing_windows (
    source        VARCHAR NOT NULL,   -- source key (name, or name-p<i>of<n> for a PARTITION)
    kind          VARCHAR NOT NULL,   -- events | compliance
    window_seq    BIGINT  NOT NULL,
    events        BIGINT,
    dead_letters  BIGINT,
    first_offset  VARCHAR,
    resume_offset VARCHAR,
    max_processed TIMESTAMPTZ,        -- newest `processed` the window saw
    committed_at  TIMESTAMPTZ,
    stop_reason   VARCHAR
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

-- One row per event id, in occurred order within each day (ties: stream position).
-- Grain: event id. Partitioned (rebuilt) by occurred_date. See events_day.sql.
CREATE TABLE IF NOT EXISTS events (
    id                     VARCHAR NOT NULL,
    type                   VARCHAR NOT NULL,
    occurred               TIMESTAMPTZ NOT NULL,
    processed              TIMESTAMPTZ,
    occurred_date          DATE NOT NULL,
    rtds_offset            VARCHAR NOT NULL,  -- offset of the copy kept (the first delivered)
    copies                 INTEGER NOT NULL,  -- copies the stream delivered into this day
    source                 VARCHAR NOT NULL,
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
    raw                    JSON NOT NULL      -- the event exactly as Airship sent it
);

CREATE TABLE IF NOT EXISTS compliance_events AS SELECT * FROM events LIMIT 0;

-- What each day build did, for checks and for people.
CREATE TABLE IF NOT EXISTS load_log (
    table_name       VARCHAR,
    day              DATE,
    built_at         TIMESTAMPTZ,
    files            BIGINT,
    landed_rows      BIGINT,
    rows             BIGINT,
    copies_dropped   BIGINT,   -- landed rows not kept: later copies, or kept in another day
    manifest         VARCHAR   -- fingerprint of the files read: unchanged → no rebuild needed
);
