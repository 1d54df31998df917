-- Record a staged batch (load_window.sql) once its rows are in the Delta table: the new keys,
-- copies of ids already kept in the same day. Parameter: $batch.
INSERT INTO {table}_keys
SELECT key_hi(k), key_lo(k), day, pos, source FROM stage_probe WHERE kept_day IS NULL;

INSERT INTO {table}_late_copies SELECT id, day, n FROM stage_late_copies;

INSERT INTO load_log
SELECT '{table}', s.occurred_date, now(), $batch, 'window', count(*),
       count(*) FILTER (WHERE p.kept_day IS NULL AND s.pos = p.pos AND s.source = p.source),
       count(*) FILTER (WHERE NOT (p.kept_day IS NULL AND s.pos = p.pos AND s.source = p.source))
FROM stage s LEFT JOIN stage_probe p ON p.k = s.k
WHERE s.reason IS NULL
GROUP BY s.occurred_date;
