-- The occurred days of the changed rows.
SELECT DISTINCT occurred_date AS k FROM mart_changes WHERE stream = 'events'
