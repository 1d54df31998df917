-- The sessions of the changed rows.
SELECT DISTINCT session_id AS k FROM mart_changes
WHERE stream = 'events' AND session_id IS NOT NULL
