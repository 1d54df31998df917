-- push_performance: how each push did.
-- Grain: one row per push and variant (push_id, group_id, variant_id). Refresh: full (opens,
-- conversions and uninstalls of a push arrive on later days than its sends).
-- Joins (rtds-protocol.md §7): PUSH_BODY.push_id = SEND.push_id = OPEN/CUSTOM.triggering_push.push_id;
-- influenced opens carry the push in `last_delivered`, which Airship keeps for 12 hours.
-- SEND_ABORTED and CONTROL carry no variant_id: they count on the push's row with variant NULL.
WITH sent AS (
    SELECT push_id, TRY_CAST(raw->>'$.body.variant_id' AS INTEGER) AS variant_id,
           any_value(group_id) AS group_id,
           count(*) FILTER (WHERE type = 'SEND') AS sends,
           count(*) FILTER (WHERE type = 'SEND_REJECTED') AS rejections,
           count(*) FILTER (WHERE type = 'SEND_ABORTED') AS aborts,
           count(*) FILTER (WHERE type = 'CONTROL') AS control_group,
           min(occurred) FILTER (WHERE type = 'SEND') AS first_send_at
    FROM events
    WHERE type IN ('SEND', 'SEND_REJECTED', 'SEND_ABORTED', 'CONTROL') AND push_id IS NOT NULL
    GROUP BY ALL
),
rejected_by AS (
    SELECT push_id, TRY_CAST(raw->>'$.body.variant_id' AS INTEGER) AS variant_id,
           histogram(raw->>'$.body.status') AS rejections_by_status
    FROM events WHERE type = 'SEND_REJECTED' GROUP BY ALL
),
aborted_by AS (
    SELECT push_id, histogram(raw->>'$.body.reason') AS aborts_by_reason
    FROM events WHERE type = 'SEND_ABORTED' GROUP BY ALL
),
body AS (
    SELECT push_id, arg_min(raw, rtds_offset) AS raw FROM events
    WHERE type = 'PUSH_BODY' AND push_id IS NOT NULL GROUP BY push_id
),
payload AS (
    SELECT push_id,
           TRY_CAST(TRY(decode(from_base64(raw->>'$.body.payload'))) AS JSON) AS p,
           (raw->'$.body.campaigns.categories')::VARCHAR[] AS categories,
           TRY_CAST(raw->>'$.body.trimmed' AS BOOLEAN) AS payload_trimmed
    FROM body
),
direct AS (
    SELECT triggering_push_id AS push_id,
           TRY_CAST(raw->>'$.body.triggering_push.variant_id' AS INTEGER) AS variant_id,
           count(*) AS direct_opens, count(DISTINCT channel) AS direct_open_channels
    FROM events WHERE type = 'OPEN' AND triggering_push_id IS NOT NULL GROUP BY ALL
),
influenced AS (
    SELECT last_delivered_push_id AS push_id,
           TRY_CAST(raw->>'$.body.last_delivered.variant_id' AS INTEGER) AS variant_id,
           count(*) AS influenced_opens
    FROM events
    WHERE type = 'OPEN' AND last_delivered_push_id IS NOT NULL
      AND triggering_push_id IS DISTINCT FROM last_delivered_push_id
      AND occurred - TRY_CAST(raw->>'$.body.last_delivered.time' AS TIMESTAMPTZ) <= INTERVAL 12 HOUR
    GROUP BY ALL
),
conversions AS (
    SELECT triggering_push_id AS push_id,
           TRY_CAST(raw->>'$.body.triggering_push.variant_id' AS INTEGER) AS variant_id,
           count(*) AS conversions, sum(custom_event_value) AS conversion_value
    FROM events WHERE type = 'CUSTOM' AND triggering_push_id IS NOT NULL GROUP BY ALL
),
uninstalled AS (
    SELECT s.push_id, TRY_CAST(s.raw->>'$.body.variant_id' AS INTEGER) AS variant_id,
           count(DISTINCT u.channel) AS uninstalls_24h
    FROM events s
    JOIN events u ON u.type = 'UNINSTALL' AND u.channel = s.channel
                 AND u.occurred >= s.occurred AND u.occurred < s.occurred + INTERVAL 24 HOUR
    WHERE s.type = 'SEND'
    GROUP BY ALL
),
pushes AS (
    SELECT push_id, variant_id FROM sent
    UNION SELECT push_id, NULL::INTEGER FROM body WHERE push_id NOT IN (SELECT push_id FROM sent)
)
SELECT k.push_id, s.group_id, k.variant_id,
       p.p->>'$.notification.alert' AS alert,
       (p.p->'$.device_types')::VARCHAR[] AS platforms,
       p.categories, p.payload_trimmed,
       s.first_send_at,
       coalesce(s.sends, 0) AS sends,
       coalesce(s.rejections, 0) AS rejections, r.rejections_by_status,
       coalesce(s.aborts, 0) AS aborts, a.aborts_by_reason,
       coalesce(s.control_group, 0) AS control_group,
       coalesce(d.direct_opens, 0) AS direct_opens,
       coalesce(d.direct_open_channels, 0) AS direct_open_channels,
       coalesce(i.influenced_opens, 0) AS influenced_opens,
       CASE WHEN s.sends > 0 THEN coalesce(d.direct_open_channels, 0) / s.sends END AS direct_open_rate,
       coalesce(un.uninstalls_24h, 0) AS uninstalls_24h,
       coalesce(c.conversions, 0) AS conversions,
       coalesce(c.conversion_value, 0) AS conversion_value
FROM pushes k
LEFT JOIN sent s ON s.push_id = k.push_id AND s.variant_id IS NOT DISTINCT FROM k.variant_id
LEFT JOIN rejected_by r ON r.push_id = k.push_id AND r.variant_id IS NOT DISTINCT FROM k.variant_id
LEFT JOIN aborted_by a ON a.push_id = k.push_id AND k.variant_id IS NULL
LEFT JOIN payload p ON p.push_id = k.push_id
LEFT JOIN direct d ON d.push_id = k.push_id AND d.variant_id IS NOT DISTINCT FROM k.variant_id
LEFT JOIN influenced i ON i.push_id = k.push_id AND i.variant_id IS NOT DISTINCT FROM k.variant_id
LEFT JOIN conversions c ON c.push_id = k.push_id AND c.variant_id IS NOT DISTINCT FROM k.variant_id
LEFT JOIN uninstalled un ON un.push_id = k.push_id AND un.variant_id IS NOT DISTINCT FROM k.variant_id
ORDER BY s.first_send_at NULLS LAST, k.push_id, k.variant_id
