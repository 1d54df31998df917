-- daily_active_channels: who used the app each day.
-- Grain: day, platform, app_version, country (day: occurred date, UTC)
-- Unique key: day
-- Refresh: daily, the days the new rows touch. Active = any event the device itself reported;
-- sends, rejections, aborts, control, push bodies, decay uninstalls and subscription/consent
-- bookkeeping (SUBSCRIPTION, SUBSCRIPTION_LIST, CONTACT_CHANGE) are not activity, nor are
-- Airship's reports on a message's fate (email delivery, injection, delay, bounce; SMS
-- delivery reports: message_event in _macros.sql); an email opened or clicked, an SMS read is.
-- Nullable: none (app_version and country are '(none)' where the device says none)
-- New = the channel's registration event that day, which Airship sends once per channel:
--   IOS, ANDROID, AMAZON, WEB: FIRST_OPEN (the app's or web SDK's first run);
--   EMAIL, SMS, OPEN: FIRST_OPT_IN (their first opt-in; they never send FIRST_OPEN).
-- A channel is active on the day it is new (its FIRST_OPT_IN counts as activity, as FIRST_OPEN
-- does), so new ≤ active. New is a fact of one event, not of the channel's history: a refresh
-- reads no earlier rows of the channel, and the days of the changed rows are all the days
-- whose counts can change. A channel that sent its registration event again (Airship does not)
-- would count new again.
-- Opted in = the device reported push_opt_in = true that day.
WITH reported AS (
    SELECT occurred_date, device_type, app_version, country, channel, push_opt_in,
           type = CASE WHEN device_type IN ('EMAIL', 'SMS', 'OPEN') THEN 'FIRST_OPT_IN'
                       ELSE 'FIRST_OPEN' END AS registered
    FROM stg_events
    WHERE stream = 'events' AND in_scope(occurred_date)
      AND channel IS NOT NULL AND device_type IS NOT NULL
      AND type NOT IN ('SEND', 'SEND_REJECTED', 'SEND_ABORTED', 'CONTROL', 'PUSH_BODY', 'UNINSTALL',
                       'SUBSCRIPTION', 'SUBSCRIPTION_LIST', 'CONTACT_CHANGE')
      AND (type <> 'FIRST_OPT_IN' OR device_type IN ('EMAIL', 'SMS', 'OPEN'))
      AND coalesce(message_event IN ('email_open', 'email_initial_open',
                                     'email_click', 'email_unsubscribe', 'sms_read'),
                   true)
)
SELECT occurred_date AS day,
       device_type AS platform,
       coalesce(app_version, '(none)') AS app_version,
       coalesce(country, '(none)') AS country,
       count(DISTINCT channel) AS active_channels,
       count(DISTINCT channel) FILTER (WHERE registered) AS new_channels,
       count(DISTINCT channel) FILTER (WHERE push_opt_in) AS opted_in_channels
FROM reported
GROUP BY ALL
ORDER BY ALL
