-- Decay-inferred and explicit uninstalls must add up; a channel cannot be older than RTDS allows
-- to be negative.
SELECT * FROM uninstalls
WHERE decay_inferred + explicit <> uninstalls OR median_channel_age_days < 0
