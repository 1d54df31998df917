-- The hours of `processed` of the changed rows, and of the windows committed since last time.
SELECT DISTINCT date_trunc('hour', processed AT TIME ZONE 'UTC') AS k FROM mart_changes
WHERE processed IS NOT NULL
UNION
SELECT date_trunc('hour', committed_at AT TIME ZONE 'UTC') FROM mart_new_windows
