-- Rebuild one day of {table} from that day's committed landing files. Run in one transaction.
-- Parameters: $files (the day's committed Parquet files), $day (DATE), $manifest (fingerprint).
--
-- Deduplication: every copy of an event carries the same id; the copy kept is the first the
-- stream delivered (lowest offset). Duplicates are found on the narrow (id, stream_key) columns
-- only, so the wide rows are never sorted or partitioned by id — the reason this is faster than
-- a plain row_number() window over the same files (bench/events.py).
-- Offsets are opaque digit strings: compared left-padded, which orders them numerically.

CREATE OR REPLACE TEMP TABLE day_landed AS
SELECT id, type, rtds_offset, lpad(rtds_offset, 24, '0') AS stream_key, occurred, processed,
       device_type, channel, named_user_id, contact_id, push_id, group_id, raw,
       regexp_extract(filename, 'source=([^/]+)/', 1) AS source
FROM read_parquet($files, filename = true, hive_partitioning = false);

CREATE OR REPLACE TEMP TABLE day_dups AS
SELECT id, min(stream_key) AS keep_key, count(*)::INTEGER AS copies
FROM day_landed GROUP BY id HAVING count(*) > 1;

-- Copies of this day's ids already kept in other days' partitions (occurred differed).
CREATE OR REPLACE TEMP TABLE day_elsewhere AS
SELECT e.id, lpad(e.rtds_offset, 24, '0') AS stream_key
FROM {table} e
WHERE e.occurred_date <> $day AND e.id IN (SELECT id FROM day_landed);

DELETE FROM {table} WHERE occurred_date = $day;

-- Where this day holds the earlier copy, the other day's copy goes.
DELETE FROM {table} t
WHERE t.occurred_date <> $day
  AND t.id IN (SELECT x.id FROM day_elsewhere x
               JOIN day_landed l ON l.id = x.id AND l.stream_key < x.stream_key);

INSERT INTO {table}
SELECT l.id, l.type, coalesce(l.occurred, l.processed), l.processed, $day, l.rtds_offset, coalesce(d.copies, 1),
       l.source, l.device_type, l.channel, l.named_user_id, l.contact_id, l.push_id, l.group_id,
       j[1], j[2], j[3], j[4], j[5], TRY_CAST(j[6] AS DOUBLE), j[7], j[8], l.raw
FROM (
    SELECT *, json_extract_string(raw, [
        '$.body.session_id', '$.body.triggering_push.push_id', '$.body.triggering_push.group_id',
        '$.body.last_delivered.push_id', '$.body.name', '$.body.value',
        '$.device.attributes.app_version', '$.device.attributes.locale_country_code']) AS j
    FROM day_landed
) l
LEFT JOIN day_dups d ON d.id = l.id
WHERE (d.id IS NULL OR l.stream_key = d.keep_key)
  AND NOT EXISTS (SELECT 1 FROM day_elsewhere x WHERE x.id = l.id AND x.stream_key < l.stream_key)
ORDER BY coalesce(l.occurred, l.processed), l.stream_key;

INSERT INTO load_log
SELECT '{table}', $day, now(), len($files),
       (SELECT count(*) FROM day_landed),
       (SELECT count(*) FROM {table} WHERE occurred_date = $day),
       (SELECT coalesce(sum(copies - 1), 0) FROM day_dups),
       (SELECT count(DISTINCT x.id) FROM day_elsewhere x
         WHERE x.id NOT IN (SELECT id FROM {table} WHERE occurred_date = $day)),
       $manifest;

DROP TABLE day_landed;
DROP TABLE day_dups;
DROP TABLE day_elsewhere;
