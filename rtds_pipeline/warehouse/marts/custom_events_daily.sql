-- custom_events_daily: custom events by name and day.
-- Grain: one row per day (occurred date, UTC) × event name. Refresh: per day partition ($days).
-- Conversions: events attributed to the push that opened their session (triggering_push);
-- influenced: attributed only through the last push delivered within 12 h (last_delivered).
SELECT occurred_date AS day,
       custom_event_name AS event_name,
       count(*) AS events,
       count(DISTINCT channel) AS unique_channels,
       coalesce(sum(custom_event_value), 0) AS value_sum,
       count(*) FILTER (WHERE triggering_push_id IS NOT NULL) AS conversions,
       coalesce(sum(custom_event_value) FILTER (WHERE triggering_push_id IS NOT NULL), 0)
           AS conversion_value,
       count(*) FILTER (WHERE triggering_push_id IS NULL AND last_delivered_push_id IS NOT NULL)
           AS influenced_conversions
FROM events
WHERE type = 'CUSTOM' AND list_contains($days, occurred_date)
GROUP BY ALL
ORDER BY ALL
