-- The sessions of the changed rows.
SELECT DISTINCT session_key AS k FROM mart_changes
WHERE stream = 'events' AND session_key IS NOT NULL
