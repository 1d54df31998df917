-- Ids of some days of {table} that appear more than once anywhere in the table (must be none),
-- with the days they appear in. Parameter: $days (DATE[]).
SELECT id, count(*) AS n, list(DISTINCT occurred_date ORDER BY occurred_date) AS days
FROM {table}
WHERE id IN (SELECT id FROM {table} WHERE list_contains($days, occurred_date))
GROUP BY id HAVING count(*) > 1
ORDER BY n DESC, id
LIMIT 20
