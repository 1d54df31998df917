-- The in-app messages of the changed rows.
SELECT DISTINCT push_id AS k FROM mart_changes
WHERE stream = 'events' AND push_id IS NOT NULL
  AND type IN ('IN_APP_MESSAGE_DISPLAY', 'IN_APP_MESSAGE_RESOLUTION', 'IN_APP_BUTTON_TAP',
               'IN_APP_MESSAGE_EXPIRATION')
