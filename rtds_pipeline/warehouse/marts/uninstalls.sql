-- uninstalls: how fast users leave.
-- Grain: day, platform (day: occurred date, UTC)
-- Unique key: day
-- Refresh: daily, the days the new rows touch (and days of uninstalls whose channel has new
-- events: its first event may be earlier than known).
-- Nullable: platform (an UNINSTALL without a device, which Airship always sends),
-- median_channel_age_days (none of the day's uninstalls of that platform named a channel)
-- Decay-inferred: Airship inferred the uninstall from failed deliveries (body.decay = true);
-- explicit: reported directly. Channel age: from the channel's first event in the warehouse
-- (a lower bound when its first events are older than RTDS retention).
WITH gone AS (
    SELECT occurred_date, device_type, channel, occurred, decay
    FROM stg_events
    WHERE stream = 'events' AND type = 'UNINSTALL' AND in_scope(occurred_date)
),
first_seen AS (
    SELECT channel, min(occurred) AS first_seen
    FROM stg_events WHERE stream = 'events' AND channel IN (SELECT channel FROM gone) GROUP BY channel
)
SELECT g.occurred_date AS day,
       g.device_type AS platform,
       count(*) AS uninstalls,
       count(*) FILTER (WHERE g.decay) AS decay_inferred,
       count(*) FILTER (WHERE NOT g.decay) AS explicit,
       median(epoch(g.occurred - f.first_seen) / 86400.0) AS median_channel_age_days
FROM gone g LEFT JOIN first_seen f USING (channel)
GROUP BY ALL
ORDER BY ALL
