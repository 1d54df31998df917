-- Duplicate rate must be a rate; copies delivered cannot be fewer than events kept.
SELECT * FROM stream_health
WHERE duplicate_rate < 0 OR duplicate_rate > 1 OR copies_delivered < events
