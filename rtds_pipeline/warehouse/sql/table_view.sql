-- {table} as readers see it: the Delta table's current files, `copies` including copies that
-- arrived after a row was written (folded in when its day is compacted). Placeholder {files}:
-- the file list; {late}: the late-copies table.
SELECT e.id, e.type, e.occurred, e.processed, e.occurred_date, e.rtds_offset,
       (e.copies + coalesce(x.n, 0))::INTEGER AS copies, e.source, e.device_type, e.channel,
       e.named_user_id, e.contact_id, e.push_id, e.group_id, e.session_id,
       e.triggering_push_id, e.triggering_group_id, e.last_delivered_push_id,
       e.custom_event_name, e.custom_event_value, e.app_version, e.country, e.raw
FROM read_parquet({files}, hive_partitioning = true, hive_types = {'occurred_date': DATE}) e
LEFT JOIN (SELECT id, occurred_date, sum(n) AS n FROM {late} GROUP BY ALL) x
       ON x.id = e.id AND x.occurred_date = e.occurred_date
