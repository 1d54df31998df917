-- custom_events_daily: custom events by name and day.
-- Grain: day, event_name (day: occurred date, UTC)
-- Unique key: day
-- Refresh: daily, the days the new rows touch (and days whose custom events a new SEND turns
-- into conversions).
-- Nullable: event_name (a CUSTOM event without body.name, which Airship requires)
-- Custom events are what apps, websites and API callers report as CUSTOM. Airship's own email
-- engagement and SMS delivery reports arrive as CUSTOM events too (message_event in
-- _macros.sql): they are not counted here but in push_performance, by the push they belong to.
-- Conversions: events attributed to the push that opened their session (triggering_push), when
-- that push was sent to the event's channel (a SEND of it to that channel, on any day);
-- influenced: attributed only through the last push delivered within 12 h (last_delivered).
WITH custom AS (
    SELECT occurred_date, custom_event_name, channel, custom_event_value, triggering_push_id,
           last_delivered_push_id
    FROM stg_events
    WHERE stream = 'events' AND type = 'CUSTOM' AND in_scope(occurred_date)
      AND message_event IS NULL
),
reached AS (
    SELECT DISTINCT push_id, channel FROM stg_events
    WHERE stream = 'events' AND type = 'SEND' AND push_id IN (SELECT triggering_push_id FROM custom)
)
SELECT c.occurred_date AS day,
       c.custom_event_name AS event_name,
       count(*) AS events,
       count(DISTINCT c.channel) AS unique_channels,
       coalesce(sum(c.custom_event_value), 0) AS value_sum,
       count(*) FILTER (WHERE r.push_id IS NOT NULL) AS conversions,
       coalesce(sum(c.custom_event_value) FILTER (WHERE r.push_id IS NOT NULL), 0)
           AS conversion_value,
       count(*) FILTER (WHERE c.triggering_push_id IS NULL AND c.last_delivered_push_id IS NOT NULL)
           AS influenced_conversions
FROM custom c
LEFT JOIN reached r ON r.push_id = c.triggering_push_id AND r.channel = c.channel
GROUP BY ALL
ORDER BY ALL
