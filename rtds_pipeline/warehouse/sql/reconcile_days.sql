-- Reconciliation of days of {table} against their committed landing files, computed from scratch
-- (not from load_log). Per day: unique ids landed, rows in the table, landed ids whose kept copy
-- is in another day, landed ids missing from the table, and rows whose id did not land that day.
-- Correct when rows + kept_elsewhere = landed_unique and missing = not_landed = 0.
-- Parameters: $days (DATE[]), $files.
WITH landed AS (
    SELECT DISTINCT id, regexp_extract(filename, 'occurred_date=([0-9-]+)/', 1)::DATE AS day
    FROM read_parquet($files, filename = true, hive_partitioning = false)
),
placed AS (
    SELECT l.day, l.id, e.occurred_date AS kept_day
    FROM landed l LEFT JOIN {table} e ON e.id = l.id
),
per_day AS (
    SELECT day, count(*) AS landed_unique,
           count(*) FILTER (WHERE kept_day <> day) AS kept_elsewhere,
           count(*) FILTER (WHERE kept_day IS NULL) AS missing
    FROM placed GROUP BY day
),
table_days AS (
    SELECT e.occurred_date AS day, count(*) AS rows,
           count(*) FILTER (WHERE NOT EXISTS (
               SELECT 1 FROM landed l WHERE l.id = e.id AND l.day = e.occurred_date)) AS not_landed
    FROM {table} e WHERE list_contains($days, e.occurred_date) GROUP BY 1
)
SELECT d.day::VARCHAR, coalesce(p.landed_unique, 0), coalesce(t.rows, 0),
       coalesce(p.kept_elsewhere, 0), coalesce(p.missing, 0), coalesce(t.not_landed, 0)
FROM unnest($days) AS d(day)
LEFT JOIN per_day p ON p.day = d.day
LEFT JOIN table_days t ON t.day = d.day
ORDER BY 1
