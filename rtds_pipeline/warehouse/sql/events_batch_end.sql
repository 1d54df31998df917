-- Record rebuilt days (events_batch.sql) once their rows are in the Delta table.
-- Parameters: $days (DATE[]), $batch.
DELETE FROM {table}_keys
WHERE list_contains($days, occurred_date)
   OR (key_of(h, l), occurred_date) IN (SELECT k, day FROM batch_beaten);
INSERT INTO {table}_keys SELECT key_hi(k), key_lo(k), day, pos, source FROM batch_final;
DELETE FROM {table}_late_copies
WHERE list_contains($days, occurred_date)
   OR (id, occurred_date) IN (SELECT id, day FROM batch_beaten);

INSERT INTO load_log
SELECT '{table}', d.day, now(), $batch, 'rebuild',
       (SELECT count(*) FROM batch_landed l WHERE l.day = d.day),
       (SELECT count(*) FROM batch_final f WHERE f.day = d.day),
       (SELECT count(*) FROM batch_landed l WHERE l.day = d.day)
         - (SELECT count(*) FROM batch_final f WHERE f.day = d.day)
FROM unnest($days) AS d(day);
