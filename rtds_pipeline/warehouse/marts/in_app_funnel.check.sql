-- Resolutions by type must add up to at most all resolutions.
SELECT * FROM in_app_funnel
WHERE button_click_resolutions + message_click_resolutions + dismissed + timed_out > resolutions
