-- Record rebuilt days (events_batch.sql) once their rows are in the Delta table and their keys
-- in the key store. Parameters: $days (DATE[]), $batch.
DELETE FROM {table}_late_copies WHERE list_contains($days, occurred_date);
DELETE FROM cold_days WHERE table_name = '{table}' AND list_contains($days, day);

INSERT INTO load_log
SELECT '{table}', d.day, now(), $batch, 'rebuild',
       (SELECT count(*) FROM batch_landed l WHERE l.day = d.day),
       (SELECT count(*) FROM batch_final f WHERE f.day = d.day),
       (SELECT count(*) FROM batch_landed l WHERE l.day = d.day)
         - (SELECT count(*) FROM batch_final f WHERE f.day = d.day)
FROM unnest($days) AS d(day);
