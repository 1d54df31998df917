-- More new or opted-in channels than active channels.
SELECT * FROM daily_active_channels
WHERE new_channels > active_channels OR opted_in_channels > active_channels
