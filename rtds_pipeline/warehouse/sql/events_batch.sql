-- Rebuild a batch of days of {table} from their committed landing files: the narrow pass that
-- decides which copy of each id is kept, then the old rows go. events_day_insert.sql then writes
-- each day; events_batch_end.sql cleans up. All in one transaction.
-- Parameters: $days (DATE[]), $files (those days' committed files).
--
-- Deduplication: every copy of an event carries the same id; the copy kept is the first the
-- stream delivered (lowest offset; the same offset landed by two sources reading one stream: the
-- first source by name). Duplicates are found on the narrow (id, offset, source, day) columns,
-- so wide rows are never partitioned by id — why this beats a plain row_number() window over
-- the same files (bench/events.py). Offsets are opaque digit strings: compared left-padded,
-- which orders them numerically. A row's day and source are its landing folder's Hive keys
-- (occurred_date=…, source=…): never a cast that would depend on the session's time zone.

-- Which copy comes first: stream position, then source. Computed only where copies are compared
-- (padding every landed offset up front cost more than the comparisons).
CREATE OR REPLACE TEMP MACRO copy_key(rtds_offset, source) AS lpad(rtds_offset, 24, '0') || source;

-- The narrow columns only; the wide ones are read from Parquet once more by the INSERT.
CREATE OR REPLACE TEMP TABLE batch_landed AS
SELECT id, rtds_offset, source, occurred_date AS day
FROM read_parquet($files, hive_partitioning = true, hive_types = {'occurred_date': DATE, 'source': VARCHAR});

-- Ids with several copies are found by counting alone; only those few get the full aggregate
-- (aggregating every id with min/arg_min took 3.5x longer on 5M landed rows).
CREATE OR REPLACE TEMP TABLE batch_dups AS
SELECT id, min(copy_key) AS keep_key, arg_min(day, copy_key) AS keep_day,
       count(*)::INTEGER AS copies, min(day) <> max(day) AS spans_days
FROM (SELECT id, copy_key(rtds_offset, source) AS copy_key, day FROM batch_landed
      WHERE id IN (SELECT id FROM batch_landed GROUP BY id HAVING count(*) > 1))
GROUP BY id;

-- `copies` counts the copies in the kept copy's day, so it does not depend on which days are
-- built together. Copies in several days are rare (occurred differed): fixed up one by one.
UPDATE batch_dups SET copies = fix.n
FROM (SELECT l.id, count(*)::INTEGER AS n
      FROM batch_landed l
      JOIN (SELECT id, keep_day FROM batch_dups WHERE spans_days) s
        ON s.id = l.id AND s.keep_day = l.day
      GROUP BY l.id) AS fix
WHERE batch_dups.id = fix.id;

-- Copies of this batch's ids already kept in days outside the batch (their occurred differed).
CREATE OR REPLACE TEMP TABLE batch_elsewhere AS
SELECT e.id, copy_key(e.rtds_offset, e.source) AS copy_key
FROM {table} e
WHERE NOT list_contains($days, e.occurred_date) AND e.id IN (SELECT id FROM batch_landed);

DELETE FROM {table} WHERE list_contains($days, occurred_date);

-- Where the batch holds the earlier copy, the other day's copy goes.
DELETE FROM {table} t
WHERE t.id IN (SELECT x.id FROM batch_elsewhere x
               WHERE EXISTS (SELECT 1 FROM batch_landed l
                             WHERE l.id = x.id AND copy_key(l.rtds_offset, l.source) < x.copy_key));

-- Every landed copy that is not kept, as exact (id, rtds_offset, source) triples (a source lands
-- an offset once): the INSERT drops them with one anti-join on equality, never an inequality
-- join against the wide rows.
CREATE OR REPLACE TEMP TABLE batch_drop AS
SELECT l.id, l.rtds_offset, l.source
FROM batch_landed l JOIN batch_dups d ON d.id = l.id
WHERE copy_key(l.rtds_offset, l.source) <> d.keep_key
UNION ALL
SELECT l.id, l.rtds_offset, l.source
FROM batch_landed l JOIN batch_elsewhere x ON x.id = l.id
WHERE x.copy_key < copy_key(l.rtds_offset, l.source);
