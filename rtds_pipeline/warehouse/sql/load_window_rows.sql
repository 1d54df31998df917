-- The new rows of a staged batch (load_window_probe.sql): ids their day does not hold yet, one
-- row each, in occurred order (ties: stream position) — the order readers see until the day is
-- compacted.
SELECT s.id, s.type, s.occurred, s.processed, s.occurred_date, s.rtds_offset, p.n AS copies,
       s.source, s.device_type, s.channel, s.named_user_id, s.contact_id, s.push_id, s.group_id,
       s.session_id, s.triggering_push_id, s.triggering_group_id, s.last_delivered_push_id,
       s.custom_event_name, s.custom_event_value, s.app_version, s.country, s.raw::VARCHAR AS raw
FROM stage s
JOIN stage_probe p ON p.k = s.k AND p.day = s.occurred_date AND p.pos = s.pos
                  AND p.source = s.source
WHERE s.reason IS NULL AND p.kept_day IS NULL
QUALIFY row_number() OVER (PARTITION BY s.k, s.occurred_date ORDER BY s.window_seq, s.window_pos) = 1
ORDER BY s.occurred_date, s.occurred, s.pos, s.source
