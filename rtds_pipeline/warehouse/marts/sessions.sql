-- sessions: one row per app session.
-- Grain: session_id. Refresh: full (a session can span midnight, and its CLOSE is latent: sent
-- when the app next becomes active, often on a later day).
-- A session whose CLOSE never came is kept with ended_at NULL and close_missing = true; its
-- duration is not invented. Device clocks can put a CLOSE before its OPEN: such a session is
-- kept and marked clock_anomaly, with no duration. push_initiated: its OPEN carries a
-- triggering_push.
WITH s AS (
    SELECT session_id,
           any_value(channel) AS channel,
           any_value(device_type) AS platform,
           coalesce(min(occurred) FILTER (WHERE type = 'OPEN'), min(occurred)) AS started_at,
           max(occurred) FILTER (WHERE type = 'CLOSE') AS ended_at,
           count(*) FILTER (WHERE type = 'SCREEN_VIEWED') AS screens_viewed,
           count(*) FILTER (WHERE type = 'CUSTOM') AS custom_events,
           coalesce(bool_or(type = 'OPEN' AND triggering_push_id IS NOT NULL), false) AS push_initiated,
           any_value(triggering_push_id) FILTER (WHERE type = 'OPEN') AS triggering_push_id,
           count(*) FILTER (WHERE type = 'CLOSE') = 0 AS close_missing,
           count(*) FILTER (WHERE type = 'OPEN') = 0 AS open_missing,
           count(*) AS events
    FROM events
    WHERE session_id IS NOT NULL
      AND type IN ('OPEN', 'CLOSE', 'SCREEN_VIEWED', 'CUSTOM')
    GROUP BY session_id
)
SELECT session_id, channel, platform, started_at, ended_at,
       CASE WHEN ended_at >= started_at THEN epoch(ended_at - started_at) END AS duration_s,
       screens_viewed, custom_events, push_initiated, triggering_push_id,
       close_missing, open_missing, coalesce(ended_at < started_at, false) AS clock_anomaly, events
FROM s
ORDER BY started_at, session_id
