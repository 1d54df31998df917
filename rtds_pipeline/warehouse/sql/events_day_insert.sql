-- Write some days of {table}: the kept copy of every id, by day in occurred order (ties: stream
-- position), typed columns parsed once from the raw JSON. Sorting a few days at a time keeps
-- memory bounded. Parameter: $files (those days' committed files).
-- Uses batch_dups / batch_drop from events_batch.sql.
INSERT INTO {table}
SELECT l.id, l.type, l.occurred, l.processed, l.day, l.rtds_offset, coalesce(d.copies, 1),
       l.source, l.device_type, l.channel, l.named_user_id, l.contact_id, l.push_id, l.group_id,
       j[1], j[2], j[3], j[4], j[5], TRY_CAST(j[6] AS DOUBLE), j[7], j[8], l.raw
FROM (
    SELECT id, type, rtds_offset, lpad(rtds_offset, 24, '0') AS stream_key,
           coalesce(occurred, processed) AS occurred, processed,
           device_type, channel, named_user_id, contact_id, push_id, group_id, raw,
           source, occurred_date AS day,
           json_extract_string(raw, [
               '$.body.session_id', '$.body.triggering_push.push_id',
               '$.body.triggering_push.group_id', '$.body.last_delivered.push_id', '$.body.name',
               '$.body.value', '$.device.attributes.app_version',
               '$.device.attributes.locale_country_code']) AS j
    FROM read_parquet($files, hive_partitioning = true,
                      hive_types = {'occurred_date': DATE, 'source': VARCHAR})
) l
LEFT JOIN batch_dups d ON d.id = l.id
WHERE NOT EXISTS (SELECT 1 FROM batch_drop x
                  WHERE x.id = l.id AND x.rtds_offset = l.rtds_offset AND x.source = l.source)
ORDER BY l.day, l.occurred, l.stream_key;
