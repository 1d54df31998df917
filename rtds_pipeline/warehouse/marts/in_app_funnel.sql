-- in_app_funnel: what happened to each in-app message.
-- Grain: push_id
-- Unique key: push_id
-- Refresh: incremental, the in-app messages the new rows touch.
-- Nullable: group_id (none of its in-app events names a group), first_display_at (no
-- IN_APP_MESSAGE_DISPLAY of it in the warehouse: only resolutions, taps or expirations, as
-- when its displays are older than RTDS retention or than the pipeline)
-- Resolutions by type (BUTTON_CLICK, MESSAGE_CLICK, USER_DISMISSED, TIMED_OUT); expirations are
-- latent (reported at the next app start).
SELECT push_id,
       min(group_id) AS group_id,
       min(occurred) FILTER (WHERE type = 'IN_APP_MESSAGE_DISPLAY') AS first_display_at,
       count(*) FILTER (WHERE type = 'IN_APP_MESSAGE_DISPLAY') AS displays,
       count(DISTINCT channel) FILTER (WHERE type = 'IN_APP_MESSAGE_DISPLAY') AS channels_displayed,
       count(*) FILTER (WHERE type = 'IN_APP_MESSAGE_RESOLUTION') AS resolutions,
       count(*) FILTER (WHERE type = 'IN_APP_MESSAGE_RESOLUTION' AND body_type = 'BUTTON_CLICK') AS button_click_resolutions,
       count(*) FILTER (WHERE type = 'IN_APP_MESSAGE_RESOLUTION' AND body_type = 'MESSAGE_CLICK') AS message_click_resolutions,
       count(*) FILTER (WHERE type = 'IN_APP_MESSAGE_RESOLUTION' AND body_type = 'USER_DISMISSED') AS dismissed,
       count(*) FILTER (WHERE type = 'IN_APP_MESSAGE_RESOLUTION' AND body_type = 'TIMED_OUT') AS timed_out,
       count(*) FILTER (WHERE type = 'IN_APP_BUTTON_TAP') AS button_taps,
       count(*) FILTER (WHERE type = 'IN_APP_MESSAGE_EXPIRATION') AS expirations
FROM stg_events
WHERE stream = 'events' AND push_id IS NOT NULL AND in_scope(push_id)
  AND type IN ('IN_APP_MESSAGE_DISPLAY', 'IN_APP_MESSAGE_RESOLUTION', 'IN_APP_BUTTON_TAP',
               'IN_APP_MESSAGE_EXPIRATION')
GROUP BY push_id
ORDER BY first_display_at NULLS LAST, push_id
