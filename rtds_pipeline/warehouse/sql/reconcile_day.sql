-- Reconciliation of one day of {table} against its committed landing files, computed from
-- scratch (not from load_log): unique ids landed = rows in the day + ids kept in other days.
-- Parameters: $files, $day.
WITH landed AS (
    SELECT DISTINCT id FROM read_parquet($files)
)
SELECT
    (SELECT count(*) FROM landed) AS landed_unique,
    (SELECT count(*) FROM {table} WHERE occurred_date = $day) AS rows,
    (SELECT count(*) FROM landed
      WHERE id IN (SELECT id FROM {table} WHERE occurred_date <> $day)) AS kept_elsewhere,
    (SELECT count(*) FROM {table} WHERE occurred_date = $day
      AND id NOT IN (SELECT id FROM landed)) AS not_landed
