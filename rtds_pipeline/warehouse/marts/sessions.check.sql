-- Negative durations, or sessions marked closed without an end.
SELECT session_id, started_at, ended_at FROM sessions
WHERE duration_s < 0 OR (NOT close_missing AND ended_at IS NULL)
