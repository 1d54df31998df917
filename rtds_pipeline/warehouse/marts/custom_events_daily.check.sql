-- More unique channels or conversions than events.
SELECT * FROM custom_events_daily WHERE unique_channels > events OR conversions > events
