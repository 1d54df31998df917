-- The manifests the loads leave for the prefilled days of bench/scale.py (table prefill_days:
-- day, events, first, first_seq, windows, settled). Each day came in windows of $window events,
-- window j with sequence number and load batch first_seq + j; a settled day was then compacted,
-- in the landing zone and in `events`, under sequence number and batch first_seq + windows.
-- Parameters: $window, $base (offset of index 0), $landing (the source's landing folder, as a
-- URL), $bytes (landed bytes an event), $target (largest compacted landing file).

CREATE OR REPLACE TEMP TABLE prefill_windows AS
SELECT day, settled, seq, lo, hi,
       (day::TIMESTAMP AT TIME ZONE 'UTC')
           + to_microseconds(((hi - 1 - first) * 86400000000 // events)::BIGINT) AS ended
FROM (SELECT *, first_seq + j AS seq, first + j * $window AS lo,
             least(first + (j + 1) * $window, first + events) AS hi
      FROM (SELECT *, unnest(range(windows)) AS j FROM prefill_days));

-- A settled day's compaction ran the day after.
CREATE OR REPLACE TEMP TABLE prefill_compactions AS
SELECT day, first_seq + windows AS seq, events, ceil(events * $bytes / $target)::BIGINT AS files,
       (SELECT max(hi) - 1 FROM prefill_windows w WHERE w.day = d.day) AS last,
       (SELECT max(ended) FROM prefill_windows w WHERE w.day = d.day) AS ended,
       ((day + 1)::TIMESTAMP AT TIME ZONE 'UTC') + INTERVAL 3 HOUR AS done_at
FROM prefill_days d WHERE settled;

INSERT INTO landing_windows
SELECT source, kind, window_seq, events, 0, first_offset, resume_offset, max_processed,
       committed_at, stop_reason, load_batch
FROM (SELECT 'events' AS source, 'events' AS kind, seq AS window_seq, hi - lo AS events,
             ($base + lo)::VARCHAR AS first_offset, ($base + hi - 1)::VARCHAR AS resume_offset,
             ended AS max_processed, ended AS committed_at, 'bench-prefill' AS stop_reason,
             seq AS load_batch
      FROM prefill_windows
      UNION ALL
      SELECT 'events', 'events', seq, 0, NULL, ($base + last)::VARCHAR, ended, done_at,
             'compaction', 0
      FROM prefill_compactions)
ORDER BY window_seq;

-- The day of the windows: a file a window. A settled day: its compacted files only (the
-- compaction record replaced its windows' files).
INSERT INTO landing_files
SELECT 'events', 'events', seq, $landing || '/occurred_date=' || day || '/' || ($base + lo) || '-'
           || ($base + hi - 1) || '.prefill.parquet', day::VARCHAR, hi - lo, (hi - lo) * $bytes
FROM prefill_windows WHERE NOT settled
UNION ALL
SELECT 'events', 'events', seq, $landing || '/occurred_date=' || day || '/compacted-prefill-' || f
           || '.parquet', day::VARCHAR, rows, rows * $bytes
FROM (SELECT *, events // files + (f < events % files)::BIGINT AS rows
      FROM (SELECT *, unnest(range(files)) AS f FROM prefill_compactions))
ORDER BY 3, 4;

INSERT INTO load_batches
SELECT * FROM (SELECT 'events', seq, 'window', NULL::VARCHAR[], 'done', ended, hi - lo
               FROM prefill_windows
               UNION ALL
               SELECT 'events', seq, 'compact', [day::VARCHAR], 'done', done_at, 0
               FROM prefill_compactions)
ORDER BY 2;

INSERT INTO load_log
SELECT * FROM (SELECT 'events', day, ended, seq, 'window', hi - lo, hi - lo, 0
               FROM prefill_windows
               UNION ALL
               SELECT 'events', day, done_at, seq, 'compact', 0, 0, 0 FROM prefill_compactions)
ORDER BY 4;
