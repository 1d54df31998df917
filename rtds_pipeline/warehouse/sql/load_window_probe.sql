-- The staged ids (load_window.sql) against their days' kept keys (key_hits: the key store's
-- answer, warehouse/keys.py). Parameter: $batch. A key the batch itself wrote (a retry after a
-- crash between the key store's write and the warehouse's) is the batch's own: a new row.
CREATE OR REPLACE TEMP TABLE stage_probe AS
SELECT x.k, x.h, x.l, x.id, x.pos, x.source, x.day, c.n,
       ix.day AS kept_day, ix.kept_pos, ix.kept_source
FROM stage_keep x
JOIN (SELECT s.k, s.occurred_date AS day, count(*)::INTEGER AS n FROM stage s
      WHERE s.reason IS NULL AND (s.k, s.occurred_date) IN (SELECT k, day FROM stage_keep)
      GROUP BY ALL) c ON c.k = x.k AND c.day = x.day
LEFT JOIN (SELECT * FROM key_hits WHERE kept_batch <> $batch) ix
       ON ix.h = x.h AND ix.l = x.l AND ix.day = x.day;

-- Copies of ids an earlier load kept in the same day: counted there, never written (the id's
-- row gets them through {table}_late_copies, the marts' staging through stg_events.copies).
CREATE OR REPLACE TEMP VIEW stage_late_copies AS
SELECT id, day, n FROM stage_probe
WHERE kept_day IS NOT NULL AND (kept_pos, kept_source) < (pos, source);
