-- The days of changed custom events, and of custom events whose push a changed SEND reached.
SELECT DISTINCT occurred_date AS k FROM mart_changes WHERE stream = 'events' AND type = 'CUSTOM'
UNION
SELECT c.occurred_date FROM stg_events c
JOIN mart_changes s ON s.push_id = c.triggering_push_id AND s.channel = c.channel
WHERE c.stream = 'events' AND c.type = 'CUSTOM' AND s.stream = 'events' AND s.type = 'SEND'
