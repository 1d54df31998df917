-- daily_active_channels: who used the app each day.
-- Grain: day, platform, app_version, country (day: occurred date, UTC)
-- Unique key: day
-- Refresh: daily, the days the new rows touch. Active = any event the device itself reported; sends,
-- rejections, aborts, control, push bodies, decay uninstalls and subscription/consent
-- bookkeeping (SUBSCRIPTION, SUBSCRIPTION_LIST, FIRST_OPT_IN, CONTACT_CHANGE) are not activity,
-- nor are Airship's reports on a message's fate (email delivery, injection, delay, bounce; SMS
-- delivery reports: message_event in _macros.sql); an email opened or clicked, an SMS read is.
-- New = FIRST_OPEN that day; opted in = the device reported push_opt_in = true that day.
SELECT occurred_date AS day,
       device_type AS platform,
       coalesce(app_version, '(none)') AS app_version,
       coalesce(country, '(none)') AS country,
       count(DISTINCT channel) AS active_channels,
       count(DISTINCT channel) FILTER (WHERE type = 'FIRST_OPEN') AS new_channels,
       count(DISTINCT channel) FILTER (WHERE push_opt_in)
           AS opted_in_channels
FROM stg_events
WHERE stream = 'events' AND in_scope(occurred_date)
  AND channel IS NOT NULL AND device_type IS NOT NULL
  AND type NOT IN ('SEND', 'SEND_REJECTED', 'SEND_ABORTED', 'CONTROL', 'PUSH_BODY', 'UNINSTALL',
                   'SUBSCRIPTION', 'SUBSCRIPTION_LIST', 'FIRST_OPT_IN', 'CONTACT_CHANGE')
  AND coalesce(message_event IN ('email_open', 'email_initial_open',
                                                   'email_click', 'email_unsubscribe', 'sms_read'),
               true)
GROUP BY ALL
ORDER BY ALL
