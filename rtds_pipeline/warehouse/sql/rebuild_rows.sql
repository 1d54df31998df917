-- The rows of the rebuilt days (events_batch.sql decided which copies are kept), in occurred
-- order (ties: stream position). Parameter: $files.
SELECT s.id, s.type, s.occurred, s.processed, s.occurred_date, s.rtds_offset, f.n AS copies,
       s.source, s.device_type, s.channel, s.named_user_id, s.contact_id, s.push_id, s.group_id,
       s.session_id, s.triggering_push_id, s.triggering_group_id, s.last_delivered_push_id,
       s.custom_event_name, s.custom_event_value, s.app_version, s.country, s.raw::VARCHAR AS raw
FROM landed($files) s
JOIN batch_final f ON f.k = s.k AND f.day = s.occurred_date AND f.pos = s.pos
                 AND f.source = s.source
WHERE s.reason IS NULL
QUALIFY row_number() OVER (PARTITION BY s.k, s.occurred_date ORDER BY s.window_seq, s.window_pos) = 1
ORDER BY s.occurred_date, s.occurred, s.pos, s.source
