-- Record a staged batch (load_window.sql) once its rows are in the Delta table and its new keys
-- in the key store: copies of ids already kept, what was loaded per day, the days behind the
-- horizon it brought (loaded by `fold_in_cold`). Parameters: $batch, $hot_floor.
INSERT INTO {table}_late_copies SELECT id, day, n FROM stage_late_copies;

INSERT INTO load_log
SELECT '{table}', s.occurred_date, now(), $batch, 'window', count(*),
       count(*) FILTER (WHERE p.kept_day IS NULL AND s.pos = p.pos AND s.source = p.source),
       count(*) FILTER (WHERE NOT (p.kept_day IS NULL AND s.pos = p.pos AND s.source = p.source))
FROM stage s JOIN stage_probe p ON p.k = s.k AND p.day = s.occurred_date
WHERE s.reason IS NULL
GROUP BY s.occurred_date;

INSERT INTO cold_days
SELECT '{table}', occurred_date, count(*), now() FROM stage
WHERE reason IS NULL AND occurred_date < $hot_floor
GROUP BY occurred_date;
