-- The days of changed uninstalls, and of uninstalls whose channel has changed rows (its first
-- event may now be earlier).
SELECT DISTINCT occurred_date AS k FROM mart_changes WHERE stream = 'events' AND type = 'UNINSTALL'
UNION
SELECT u.occurred_date FROM stg_events u
WHERE u.stream = 'events' AND u.type = 'UNINSTALL'
  AND u.channel IN (SELECT channel FROM mart_changes WHERE stream = 'events')
