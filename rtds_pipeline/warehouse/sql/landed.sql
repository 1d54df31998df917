-- landed(files): the committed landing rows of some files, typed as {table} wants them, with
-- what deduplication needs (the id's key `k`, the stream position `pos`) and, for a row that
-- breaks the table's contract, the reason (NULL when the row is good). One projection for the
-- incremental load and the rebuild, so both write exactly the same rows.
-- A row's day and source are its landing folder's Hive keys (occurred_date=…, source=…):
-- never a cast that would depend on the session's time zone.
CREATE OR REPLACE TEMP MACRO key_hi(k) AS (k >> 64)::UBIGINT;
CREATE OR REPLACE TEMP MACRO key_lo(k) AS (k & 18446744073709551615::UHUGEINT)::UBIGINT;
CREATE OR REPLACE TEMP MACRO key_of(h, l) AS (h::UHUGEINT << 64) | l::UHUGEINT;

CREATE OR REPLACE TEMP MACRO landed(files) AS TABLE
SELECT md5_number(id) AS k,
       CASE WHEN regexp_full_match(rtds_offset, '[0-9]{1,19}') THEN rtds_offset::UBIGINT END AS pos,
       CASE WHEN id IS NULL THEN 'no id'
            WHEN type IS NULL THEN 'no type'
            WHEN rtds_offset IS NULL OR NOT regexp_full_match(rtds_offset, '[0-9]{1,19}')
                THEN 'offset is not a plain digit string'
            WHEN coalesce(occurred, processed) IS NULL THEN 'neither occurred nor processed'
       END AS reason,
       id, type, coalesce(occurred, processed) AS occurred, processed,
       occurred_date, rtds_offset, source, window_seq, window_pos,
       device_type, channel, named_user_id, contact_id, push_id, group_id,
       j[1] AS session_id, j[2] AS triggering_push_id, j[3] AS triggering_group_id,
       j[4] AS last_delivered_push_id, j[5] AS custom_event_name,
       TRY_CAST(j[6] AS DOUBLE) AS custom_event_value, j[7] AS app_version, j[8] AS country,
       raw
FROM (
    SELECT *, json_extract_string(raw, [
               '$.body.session_id', '$.body.triggering_push.push_id',
               '$.body.triggering_push.group_id', '$.body.last_delivered.push_id', '$.body.name',
               '$.body.value', '$.device.attributes.app_version',
               '$.device.attributes.locale_country_code']) AS j
    FROM read_parquet(files, hive_partitioning = true,
                      hive_types = {'occurred_date': DATE, 'source': VARCHAR})
);
