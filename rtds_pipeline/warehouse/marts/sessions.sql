-- sessions: one row per app or web session.
-- Grain: session_id
-- Unique key: session_key
-- Refresh: incremental, the sessions the new rows touch (a session can span midnight, and its
-- CLOSE is latent: sent when the app next becomes active, often on a later day).
-- Nullable: ended_at (close_missing: an app session whose CLOSE has not come, or never will)
-- Nullable: duration_s (no end: close_missing; or clock_anomaly), triggering_push_id (no OPEN
-- or WEB_SESSION of it named a triggering push: push_initiated is false), channel, platform
-- (none of its events named a device: Airship's OPEN, CLOSE and WEB_SESSION always do)
-- session_key: an 8-byte key of session_id (the staging's), which a refresh finds a touched
-- session's rows by (in_scope_row): one fixed-width column probed for their row ids, then only
-- those rows read, wherever in the history they lie.
-- App sessions (IOS, ANDROID, AMAZON) start at OPEN and end at CLOSE. A session whose CLOSE never
-- came is kept with ended_at NULL and close_missing = true; its duration is not invented. Device
-- clocks can put a CLOSE before its OPEN: such a session is kept and marked clock_anomaly, with
-- no duration. A session with no device named (and no WEB_SESSION) is taken for an app's.
-- Web sessions (WEB) start at WEB_SESSION. Web has no CLOSE: a web session ends at its last
-- event (a SCREEN_VIEWED or CUSTOM with its session_id), so its duration is last event −
-- WEB_SESSION (0 when nothing followed), and close_missing is false (nothing is missing).
-- over_cap: longer than the cap, 4 hours; the duration is kept as measured. The SDK ends an
-- app session when the app leaves the foreground, and the screen locks within minutes unless
-- the app keeps it on: a film or a game mostly ends within 4 hours, and the rare longer sitting
-- (navigation on a long drive) weighs less than what else lies beyond: a device clock that was
-- wrong at OPEN or at CLOSE and set right in between (by days or months, too), a web tab left
-- open. Leave these out of medians, sums and averages of duration_s, as the README's question
-- does. Never NULL: false when there is no duration.
-- open_missing: no OPEN / WEB_SESSION came; the session then starts at its first event.
-- push_initiated: its OPEN or WEB_SESSION carries a triggering_push.
-- Airship's email/SMS message events can carry a session_id (message_event in _macros.sql):
-- they belong to no app or web session.
WITH ev AS (
    SELECT session_id, session_key, channel, device_type, type, occurred, triggering_push_id
    FROM stg_events
    WHERE stream = 'events' AND session_id IS NOT NULL AND in_scope_row(rowid)
      AND type IN ('OPEN', 'CLOSE', 'WEB_SESSION', 'SCREEN_VIEWED', 'CUSTOM')
      AND message_event IS NULL
),
s AS (
    SELECT session_id,
           min(session_key) AS session_key,
           min(channel) AS channel,
           min(device_type) AS platform,
           coalesce(bool_or(type = 'WEB_SESSION' OR device_type = 'WEB'), false) AS web,
           coalesce(min(occurred) FILTER (WHERE type IN ('OPEN', 'WEB_SESSION')), min(occurred))
               AS started_at,
           max(occurred) AS last_event_at,
           max(occurred) FILTER (WHERE type = 'CLOSE') AS closed_at,
           count(*) FILTER (WHERE type = 'SCREEN_VIEWED') AS screens_viewed,
           count(*) FILTER (WHERE type = 'CUSTOM') AS custom_events,
           coalesce(bool_or(type IN ('OPEN', 'WEB_SESSION') AND triggering_push_id IS NOT NULL),
                    false) AS push_initiated,
           min(triggering_push_id) FILTER (WHERE type IN ('OPEN', 'WEB_SESSION'))
               AS triggering_push_id,
           count(*) FILTER (WHERE type = 'CLOSE') = 0 AS no_close,
           count(*) FILTER (WHERE type IN ('OPEN', 'WEB_SESSION')) = 0 AS open_missing,
           count(*) AS events
    FROM ev
    GROUP BY session_id
),
ended AS (
    SELECT *, CASE WHEN web THEN last_event_at ELSE closed_at END AS ended_at FROM s
)
SELECT session_id, channel, platform, started_at, ended_at,
       CASE WHEN ended_at >= started_at THEN epoch(ended_at - started_at) END AS duration_s,
       screens_viewed, custom_events, push_initiated, triggering_push_id,
       no_close AND NOT web AS close_missing, open_missing,
       coalesce(ended_at < started_at, false) AS clock_anomaly,
       coalesce(ended_at - started_at > INTERVAL 4 HOUR, false) AS over_cap,
       events, session_key
FROM ended
ORDER BY started_at, session_id
