-- push_performance: how each push did, on every channel kind it went to.
-- Grain: push_id, variant_id (one row per push and variant)
-- Unique key: push_id
-- Refresh: incremental, the pushes the new rows touch (opens, conversions and uninstalls of a
-- push arrive on later days than its sends; a new UNINSTALL touches the pushes sent to its
-- channel in the 24 h before).
-- Nullable: group_id (its sends, rejections, aborts and controls name no group: a one-off
-- push; or it has none of them, only a PUSH_BODY), variant_id (not an A/B test; the row that
-- holds a push's SEND_ABORTED and CONTROL, which carry no variant; a push with only a PUSH_BODY)
-- Nullable: alert, platforms, categories, payload_trimmed (no PUSH_BODY came for it; or its
-- payload was trimmed, or has none of them: an alert set per platform only, no campaigns)
-- Nullable: first_send_at, sends_by_platform (no SEND of that push and variant),
-- rejections_by_status (no SEND_REJECTED), aborts_by_reason (no SEND_ABORTED; and on every
-- row with a variant, as aborts carry none), direct_open_rate (app_sends = 0: the push went
-- to no app channel — web, email, SMS and open channels only, none of which opens an app)
-- Joins (rtds-protocol.md §7): PUSH_BODY.push_id = SEND.push_id = OPEN/CUSTOM.triggering_push.push_id;
-- influenced opens carry the push in `last_delivered`, which Airship keeps for 12 hours.
-- SEND_ABORTED and CONTROL carry no variant_id: they count on the push's row with variant NULL.
-- Each rate follows what it divides, numerator then denominator, so a NULL rate explains
-- itself: direct_open_rate = direct_open_channels / app_sends. App opens (OPEN) can only come
-- from app channels, so app_sends counts the sends to IOS, ANDROID and AMAZON. Conversions:
-- custom events (not Airship's email/SMS message events) whose triggering push was sent to
-- their channel (a SEND of that push to that channel); converting_channels ≤ sends. Web, email
-- and SMS engagement: WEB_CLICK; Airship's email events (delivery, open, click, bounce,
-- unsubscribe) and SMS delivery reports (message_event in _macros.sql) by their
-- triggering_push; SHORT_LINK_CLICK by push_id.
WITH ev AS NOT MATERIALIZED (  -- inlined: each use filters its own push ids
    SELECT * FROM stg_events WHERE stream = 'events'
),
sent AS (
    SELECT push_id, variant_id,
           min(group_id) AS group_id,
           count(*) FILTER (WHERE type = 'SEND') AS sends,
           count(*) FILTER (WHERE type = 'SEND' AND device_type IN ('IOS', 'ANDROID', 'AMAZON'))
               AS app_sends,
           histogram(device_type) FILTER (WHERE type = 'SEND') AS sends_by_platform,
           count(*) FILTER (WHERE type = 'SEND_REJECTED') AS rejections,
           count(*) FILTER (WHERE type = 'SEND_ABORTED') AS aborts,
           count(*) FILTER (WHERE type = 'CONTROL') AS control_group,
           min(occurred) FILTER (WHERE type = 'SEND') AS first_send_at
    FROM ev
    WHERE type IN ('SEND', 'SEND_REJECTED', 'SEND_ABORTED', 'CONTROL') AND push_id IS NOT NULL
      AND in_scope(push_id)
    GROUP BY ALL
),
rejected_by AS (
    SELECT push_id, variant_id, histogram(body_status) AS rejections_by_status
    FROM ev WHERE type = 'SEND_REJECTED' AND in_scope(push_id) GROUP BY ALL
),
aborted_by AS (
    SELECT push_id, histogram(body_reason) AS aborts_by_reason
    FROM ev WHERE type = 'SEND_ABORTED' AND in_scope(push_id) GROUP BY ALL
),
payload AS (
    SELECT push_id,
           arg_min({'p': payload, 'categories': categories, 'trimmed': payload_trimmed},
                   rtds_offset) AS b
    FROM ev WHERE type = 'PUSH_BODY' AND push_id IS NOT NULL AND in_scope(push_id)
    GROUP BY push_id
),
direct AS (
    SELECT triggering_push_id AS push_id, triggering_variant_id AS variant_id,
           count(*) AS direct_opens, count(DISTINCT channel) AS direct_open_channels
    FROM ev WHERE type = 'OPEN' AND triggering_push_id IS NOT NULL
                  AND in_scope(triggering_push_id)
    GROUP BY ALL
),
influenced AS (
    SELECT last_delivered_push_id AS push_id, last_delivered_variant_id AS variant_id,
           count(*) AS influenced_opens
    FROM ev
    WHERE type = 'OPEN' AND last_delivered_push_id IS NOT NULL
      AND in_scope(last_delivered_push_id)
      AND triggering_push_id IS DISTINCT FROM last_delivered_push_id
      AND occurred - last_delivered_at <= INTERVAL 12 HOUR
    GROUP BY ALL
),
reached AS (
    SELECT DISTINCT push_id, channel FROM ev
    WHERE type = 'SEND' AND push_id IS NOT NULL AND channel IS NOT NULL AND in_scope(push_id)
),
conversions AS (
    SELECT c.triggering_push_id AS push_id, c.triggering_variant_id AS variant_id,
           count(*) AS conversions, count(DISTINCT c.channel) AS converting_channels,
           sum(c.custom_event_value) AS conversion_value
    FROM ev c
    SEMI JOIN reached r ON r.push_id = c.triggering_push_id AND r.channel = c.channel
    WHERE c.type = 'CUSTOM' AND c.triggering_push_id IS NOT NULL
      AND in_scope(c.triggering_push_id) AND c.message_event IS NULL
    GROUP BY ALL
),
engaged AS (
    SELECT coalesce(triggering_push_id, push_id) AS push_id,
           coalesce(triggering_variant_id, variant_id) AS variant_id,
           CASE WHEN type = 'CUSTOM' THEN message_event ELSE type END AS what
    FROM ev
    WHERE (type IN ('WEB_CLICK', 'SHORT_LINK_CLICK')
           OR (type = 'CUSTOM' AND triggering_push_id IS NOT NULL AND message_event IS NOT NULL))
      AND in_scope(coalesce(triggering_push_id, push_id))
),
engagement AS (
    SELECT push_id, variant_id,
           count(*) FILTER (WHERE what = 'WEB_CLICK') AS web_clicks,
           count(*) FILTER (WHERE what = 'email_delivery') AS email_deliveries,
           count(*) FILTER (WHERE what = 'email_open') AS email_opens,
           count(*) FILTER (WHERE what = 'email_click') AS email_clicks,
           count(*) FILTER (WHERE what = 'email_bounce') AS email_bounces,
           count(*) FILTER (WHERE what = 'email_unsubscribe') AS email_unsubscribes,
           count(*) FILTER (WHERE what = 'sms_delivered') AS sms_delivered,
           count(*) FILTER (WHERE what IN ('sms_failed', 'sms_undeliverable', 'sms_rejected',
                                           'sms_expired', 'sms_aborted')) AS sms_failed,
           count(*) FILTER (WHERE what = 'SHORT_LINK_CLICK') AS sms_link_clicks
    FROM engaged WHERE push_id IS NOT NULL
    GROUP BY ALL
),
uninstalled AS (
    SELECT s.push_id, s.variant_id, count(DISTINCT u.channel) AS uninstalls_24h
    FROM ev s
    JOIN ev u ON u.type = 'UNINSTALL' AND u.channel = s.channel
             AND u.occurred >= s.occurred AND u.occurred < s.occurred + INTERVAL 24 HOUR
    WHERE s.type = 'SEND' AND in_scope(s.push_id)
    GROUP BY ALL
),
pushes AS (
    SELECT push_id, variant_id FROM sent
    UNION SELECT push_id, NULL::INTEGER FROM payload WHERE push_id NOT IN (SELECT push_id FROM sent)
)
SELECT k.push_id, s.group_id, k.variant_id,
       p.b.p->>'$.notification.alert' AS alert,
       -- The push API takes "all" as well as a list; anything else is no list of platforms
       -- (a cast that failed would stop every mart's refresh).
       CASE WHEN json_type(p.b.p, '$.device_types') = 'VARCHAR' THEN [p.b.p->>'$.device_types']
            ELSE TRY_CAST(p.b.p->'$.device_types' AS VARCHAR[]) END AS platforms,
       p.b.categories AS categories, p.b.trimmed AS payload_trimmed,
       s.first_send_at,
       coalesce(s.sends, 0) AS sends,
       s.sends_by_platform,
       coalesce(s.rejections, 0) AS rejections, r.rejections_by_status,
       coalesce(s.aborts, 0) AS aborts, a.aborts_by_reason,
       coalesce(s.control_group, 0) AS control_group,
       coalesce(d.direct_opens, 0) AS direct_opens,
       coalesce(i.influenced_opens, 0) AS influenced_opens,
       coalesce(d.direct_open_channels, 0) AS direct_open_channels,
       coalesce(s.app_sends, 0) AS app_sends,
       CASE WHEN s.app_sends > 0 THEN coalesce(d.direct_open_channels, 0) / s.app_sends END
           AS direct_open_rate,
       coalesce(un.uninstalls_24h, 0) AS uninstalls_24h,
       coalesce(c.conversions, 0) AS conversions,
       coalesce(c.converting_channels, 0) AS converting_channels,
       coalesce(c.conversion_value, 0) AS conversion_value,
       coalesce(e.web_clicks, 0) AS web_clicks,
       coalesce(e.email_deliveries, 0) AS email_deliveries,
       coalesce(e.email_opens, 0) AS email_opens,
       coalesce(e.email_clicks, 0) AS email_clicks,
       coalesce(e.email_bounces, 0) AS email_bounces,
       coalesce(e.email_unsubscribes, 0) AS email_unsubscribes,
       coalesce(e.sms_delivered, 0) AS sms_delivered,
       coalesce(e.sms_failed, 0) AS sms_failed,
       coalesce(e.sms_link_clicks, 0) AS sms_link_clicks
FROM pushes k
LEFT JOIN sent s ON s.push_id = k.push_id AND s.variant_id IS NOT DISTINCT FROM k.variant_id
LEFT JOIN rejected_by r ON r.push_id = k.push_id AND r.variant_id IS NOT DISTINCT FROM k.variant_id
LEFT JOIN aborted_by a ON a.push_id = k.push_id AND k.variant_id IS NULL
LEFT JOIN payload p ON p.push_id = k.push_id
LEFT JOIN direct d ON d.push_id = k.push_id AND d.variant_id IS NOT DISTINCT FROM k.variant_id
LEFT JOIN influenced i ON i.push_id = k.push_id AND i.variant_id IS NOT DISTINCT FROM k.variant_id
LEFT JOIN conversions c ON c.push_id = k.push_id AND c.variant_id IS NOT DISTINCT FROM k.variant_id
LEFT JOIN engagement e ON e.push_id = k.push_id AND e.variant_id IS NOT DISTINCT FROM k.variant_id
LEFT JOIN uninstalled un ON un.push_id = k.push_id AND un.variant_id IS NOT DISTINCT FROM k.variant_id
ORDER BY s.first_send_at NULLS LAST, k.push_id, k.variant_id
