-- Stage a batch of committed windows of {table} (parameter $files: their landing files).
-- Cost O(batch): the id index is probed with the batch's ids only.
-- The kept copy of an id is the first the stream delivered: lowest offset, then source name
-- (two sources reading one stream land the same offset twice). Copies are counted in the kept
-- copy's day, so `copies` does not depend on how windows were grouped.

CREATE OR REPLACE TEMP TABLE stage AS SELECT * FROM landed($files);

-- Rows that break the contract go to quarantine (by the caller), the rest is deduplicated.
CREATE OR REPLACE TEMP TABLE stage_keep AS
SELECT k, id, pos, source, occurred_date AS day
FROM stage WHERE reason IS NULL
QUALIFY row_number() OVER (PARTITION BY k ORDER BY pos, source, window_seq, window_pos) = 1;

-- The index rows whose first half matches: the only scan of the index, one 8-byte column.
CREATE OR REPLACE TEMP TABLE stage_hits AS
SELECT ix.rowid AS r FROM {table}_keys ix WHERE ix.h IN (SELECT key_hi(k) FROM stage_keep);

CREATE OR REPLACE TEMP TABLE stage_probe AS
SELECT x.k, x.id, x.pos, x.source, x.day, c.n,
       ix.occurred_date AS kept_day, ix.pos AS kept_pos, ix.source AS kept_source
FROM stage_keep x
JOIN (SELECT s.k, count(*)::INTEGER AS n FROM stage s JOIN stage_keep x
        ON x.k = s.k AND x.day = s.occurred_date
      WHERE s.reason IS NULL GROUP BY s.k) c ON c.k = x.k
LEFT JOIN (SELECT * FROM {table}_keys WHERE rowid IN (SELECT r FROM stage_hits)) ix
       ON ix.h = key_hi(x.k) AND ix.l = key_lo(x.k);

-- Copies of ids an earlier load kept in the same day: counted there, never written (the id's
-- row gets them through {table}_late_copies, the marts' staging through stg_events.copies).
CREATE OR REPLACE TEMP VIEW stage_late_copies AS
SELECT id, day, n FROM stage_probe
WHERE kept_day = day AND (kept_pos, kept_source) < (pos, source);
