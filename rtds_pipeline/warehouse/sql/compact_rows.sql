-- A settled day of {table} rewritten sorted by occurred (ties: stream position), late copies
-- folded into `copies`. Parameters: $files (the day's Delta files), $day.
SELECT e.id, e.type, e.occurred, e.processed, e.occurred_date, e.rtds_offset,
       e.copies + coalesce(x.n, 0)::INTEGER AS copies, e.source, e.device_type, e.channel,
       e.named_user_id, e.contact_id, e.push_id, e.group_id, e.session_id,
       e.triggering_push_id, e.triggering_group_id, e.last_delivered_push_id,
       e.custom_event_name, e.custom_event_value, e.app_version, e.country, e.raw
FROM read_parquet($files, hive_partitioning = true, hive_types = {'occurred_date': DATE}) e
LEFT JOIN (SELECT id, sum(n) AS n FROM {table}_late_copies WHERE occurred_date = $day
           GROUP BY id) x ON x.id = e.id
ORDER BY e.occurred, lpad(e.rtds_offset, 24, '0'), e.source
