-- Pushes with more channels opening directly than sends, or negative counts.
SELECT push_id, variant_id, sends, direct_open_channels FROM push_performance
WHERE (sends > 0 AND direct_open_channels > sends) OR rejections < 0 OR aborts < 0
