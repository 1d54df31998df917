-- End of a batch build (events_batch.sql): per-day counts for load_log, then clean up.
-- Parameter: $days (DATE[]).
CREATE OR REPLACE TEMP TABLE batch_stats AS
SELECT d.day,
       (SELECT count(*) FROM batch_landed l WHERE l.day = d.day) AS landed_rows,
       (SELECT count(*) FROM {table} e WHERE e.occurred_date = d.day) AS rows
FROM unnest($days) AS d(day);

DROP TABLE batch_landed;
DROP TABLE batch_dups;
DROP TABLE batch_elsewhere;
DROP TABLE batch_drop;
DROP MACRO copy_key;
