-- stream_health: is the stream itself healthy?
-- Grain: hour_utc (an hour, UTC, of `processed`: when Airship processed the events, with the
-- windows committed in that hour)
-- Unique key: hour_utc
-- Refresh: incremental, the hours the new rows and windows touch.
-- Nullable: events_by_type, latency_p50_s, latency_p95_s, latency_p99_s, latency_max_s (an
-- hour with windows committed in it but no event processed in it), stream_lag_max_s (an hour
-- with no window committed in it, or only windows that saw no event)
-- duplicate_rate: extra copies / copies delivered. Latency: processed − occurred (seconds).
-- late_events: occurred on an earlier UTC day than processed (they update past partitions).
-- future_occurred: occurred after processed (device clock ahead); clamped: occurred = processed
-- exactly (Airship replaces a device time more than 5 minutes ahead by server time).
WITH ev AS (
    SELECT processed, occurred, type, copies FROM stg_events
    WHERE processed >= scope_floor() AND in_scope(date_trunc('hour', processed AT TIME ZONE 'UTC'))
),
per_hour AS (
    SELECT date_trunc('hour', processed AT TIME ZONE 'UTC') AS hour_utc,
           count(*) AS events,
           sum(copies) AS copies_delivered,
           (sum(copies) - count(*)) / sum(copies) AS duplicate_rate,
           histogram(type) AS events_by_type,
           quantile_cont(epoch(processed - occurred), 0.5) AS latency_p50_s,
           quantile_cont(epoch(processed - occurred), 0.95) AS latency_p95_s,
           quantile_cont(epoch(processed - occurred), 0.99) AS latency_p99_s,
           max(epoch(processed - occurred)) AS latency_max_s,
           count(*) FILTER (WHERE date_trunc('day', occurred AT TIME ZONE 'UTC')
                                  < date_trunc('day', processed AT TIME ZONE 'UTC')) AS late_events,
           count(*) FILTER (WHERE occurred > processed) AS future_occurred,
           count(*) FILTER (WHERE occurred = processed) AS clamped
    FROM ev WHERE processed IS NOT NULL
    GROUP BY 1
),
windows AS (
    SELECT date_trunc('hour', committed_at AT TIME ZONE 'UTC') AS hour_utc,
           count(*) AS windows,
           sum(dead_letters) AS dead_letters,
           max(epoch(committed_at - max_processed)) AS stream_lag_max_s
    FROM landing_windows
    WHERE in_scope(date_trunc('hour', committed_at AT TIME ZONE 'UTC'))
    GROUP BY 1
)
SELECT coalesce(p.hour_utc, w.hour_utc) AS hour_utc,
       coalesce(p.events, 0) AS events, coalesce(p.copies_delivered, 0) AS copies_delivered,
       coalesce(p.duplicate_rate, 0) AS duplicate_rate, p.events_by_type,
       p.latency_p50_s, p.latency_p95_s, p.latency_p99_s, p.latency_max_s,
       coalesce(p.late_events, 0) AS late_events,
       coalesce(p.future_occurred, 0) AS future_occurred, coalesce(p.clamped, 0) AS clamped,
       coalesce(w.windows, 0) AS windows, coalesce(w.dead_letters, 0) AS dead_letters,
       w.stream_lag_max_s
FROM per_hour p FULL OUTER JOIN windows w ON w.hour_utc = p.hour_utc
ORDER BY hour_utc
