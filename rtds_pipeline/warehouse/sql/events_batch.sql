-- Rebuild some days of {table} from their committed landing files: decide which copy of each
-- id is kept, on narrow columns only (the wide rows are read once more by rebuild_rows.sql).
-- Parameters: $days (DATE[]), $files (those days' committed files).
--
-- The kept copy is the one load_window.sql keeps: lowest offset, then source name; copies are
-- counted in the kept copy's day. Copies of an id kept in a day outside the batch (their occurred
-- differed, rare) are found in the id index, never by scanning the table.

CREATE OR REPLACE TEMP TABLE batch_landed AS
SELECT k, id, pos, source, occurred_date AS day, window_seq, window_pos
FROM landed($files) WHERE reason IS NULL;

CREATE OR REPLACE TEMP TABLE batch_keep AS
SELECT k, id, pos, source, day
FROM batch_landed
QUALIFY row_number() OVER (PARTITION BY k ORDER BY pos, source, window_seq, window_pos) = 1;

-- Kept copies of the batch's ids in other days.
CREATE OR REPLACE TEMP TABLE batch_elsewhere AS
SELECT key_of(ix.h, ix.l) AS k, ix.occurred_date AS day, ix.pos, ix.source
FROM {table}_keys ix
WHERE NOT list_contains($days, ix.occurred_date) AND key_of(ix.h, ix.l) IN (SELECT k FROM batch_keep);

-- Where another day holds the earlier copy, the batch's copy goes; otherwise the other day's
-- row goes (`beaten`, deleted from its day by the caller).
CREATE OR REPLACE TEMP TABLE batch_final AS
SELECT x.k, x.id, x.pos, x.source, x.day,
       (SELECT count(*) FROM batch_landed l WHERE l.k = x.k AND l.day = x.day)::INTEGER AS n
FROM batch_keep x LEFT JOIN batch_elsewhere e ON e.k = x.k
WHERE e.k IS NULL OR (x.pos, x.source) < (e.pos, e.source);

CREATE OR REPLACE TEMP TABLE batch_beaten AS
SELECT e.k, x.id, e.day FROM batch_elsewhere e JOIN batch_final x ON x.k = e.k;
