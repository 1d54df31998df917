-- The pushes the changed rows name (sent, opened, influenced, engaged), and the pushes sent to a
-- channel in the 24 h before a changed UNINSTALL of that channel.
WITH changed AS (SELECT * FROM mart_changes WHERE stream = 'events'),
gone AS (SELECT channel, occurred FROM changed WHERE type = 'UNINSTALL' AND channel IS NOT NULL)
SELECT push_id AS k FROM changed WHERE push_id IS NOT NULL
UNION SELECT triggering_push_id FROM changed WHERE triggering_push_id IS NOT NULL
UNION SELECT last_delivered_push_id FROM changed WHERE last_delivered_push_id IS NOT NULL
UNION
SELECT s.push_id FROM stg_events s
JOIN gone u ON u.channel = s.channel
           AND u.occurred >= s.occurred AND u.occurred < s.occurred + INTERVAL 24 HOUR
WHERE s.stream = 'events' AND s.type = 'SEND' AND s.push_id IS NOT NULL
  AND s.occurred > (SELECT min(occurred) - INTERVAL 24 HOUR FROM gone)
