-- Rebuild some days of {table} from their committed landing files: decide which copy of each
-- id is kept, on narrow columns only (the wide rows are read once more by rebuild_rows.sql).
-- Parameter: $files (those days' committed files).
--
-- The kept copy is the one load_window.sql keeps: by (id, occurred day), lowest offset, then
-- source name; copies are counted in the kept copy's day. A day holds all of its ids' copies,
-- so no other day is read.

CREATE OR REPLACE TEMP TABLE batch_landed AS
SELECT k, id, pos, source, occurred_date AS day, window_seq, window_pos
FROM landed($files) WHERE reason IS NULL;

CREATE OR REPLACE TEMP TABLE batch_final AS
SELECT k, key_hi(k) AS h, key_lo(k) AS l, id, pos, source, day,
       (count(*) OVER (PARTITION BY k, day))::INTEGER AS n
FROM batch_landed
QUALIFY row_number() OVER (PARTITION BY k, day ORDER BY pos, source, window_seq, window_pos) = 1;
