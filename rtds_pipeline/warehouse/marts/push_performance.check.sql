-- Pushes with more app channels opening directly than sends to app channels, more converting
-- channels than sends (a conversion needs a SEND of the push to its channel), or negative counts.
SELECT push_id, variant_id, sends, app_sends, direct_open_channels, converting_channels
FROM push_performance
WHERE (sends > 0 AND direct_open_channels > app_sends) OR converting_channels > sends
   OR rejections < 0 OR aborts < 0
