-- The occurred days of the changed rows: a new channel too is new on its registration event's
-- own day, whatever else the channel did before or after.
SELECT DISTINCT occurred_date AS k FROM mart_changes WHERE stream = 'events'
