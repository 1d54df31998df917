-- Stage a batch of committed windows of {table} (parameters $files: their landing files;
-- $hot_floor: the first day within the horizon). Cost O(batch).
-- An id's copies carry its `occurred`, so they meet in its occurred day: deduplication is by
-- (id, occurred day). The kept copy of an id is the first the stream delivered: lowest offset,
-- then source name (two sources reading one stream land the same offset twice). Copies are
-- counted in the kept copy's day, so `copies` does not depend on how windows were grouped.

CREATE OR REPLACE TEMP TABLE stage AS SELECT * FROM landed($files);

-- Rows of days behind the horizon are not loaded here: their days are rebuilt from the landing
-- zone in the background (cold_days, `fold_in_cold`), whose keys are no longer kept locally.
CREATE OR REPLACE TEMP TABLE stage_keep AS
SELECT k, key_hi(k) AS h, key_lo(k) AS l, id, pos, source, occurred_date AS day
FROM stage WHERE reason IS NULL AND occurred_date >= $hot_floor
QUALIFY row_number() OVER (PARTITION BY k, occurred_date
                           ORDER BY pos, source, window_seq, window_pos) = 1;
