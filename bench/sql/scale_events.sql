-- Synthetic rows of `events` for the prefill of bench/scale.py: realistic OPEN events (~600 bytes
-- of JSON in `raw`, like the test server's), one copy each, in stream order. A day holds $n
-- events, the global indexes $first … $first + $n - 1, spread evenly over the day from
-- $midnight; this query gives those in [$lo, $hi). Offsets are $base + index.
SELECT uuid()::VARCHAR AS id, 'OPEN' AS type, t AS occurred, t AS processed,
       (t AT TIME ZONE 'UTC')::DATE AS occurred_date, ($base + i)::VARCHAR AS rtds_offset,
       1 AS copies, 'events' AS source, 'IOS' AS device_type, uuid()::VARCHAR AS channel,
       NULL::VARCHAR AS named_user_id, uuid()::VARCHAR AS contact_id, NULL::VARCHAR AS push_id,
       NULL::VARCHAR AS group_id, uuid()::VARCHAR AS session_id,
       NULL::VARCHAR AS triggering_push_id, NULL::VARCHAR AS triggering_group_id,
       NULL::VARCHAR AS last_delivered_push_id, NULL::VARCHAR AS custom_event_name,
       NULL::DOUBLE AS custom_event_value, '5.2.1' AS app_version, 'US' AS country,
       '{"id":"' || i || '","type":"OPEN","offset":"' || ($base + i) || '",' ||
       '"device":{"channel":"x","device_type":"IOS","attributes":{"app_version":"5.2.1",' ||
       '"device_model":"iPhone15,2","device_os":"17.1","iana_timezone":"America/New_York",' ||
       '"locale_country_code":"US","locale_language_code":"en","push_opt_in":"true"}},' ||
       '"body":{"session_id":"' || uuid() || '"},"occurred":"' || stamp || '",' ||
       '"processed":"' || stamp || '","user":{"contact_id":"' || uuid() || '"}}' AS raw
FROM (SELECT i, t, strftime(t AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%S.%gZ') AS stamp
      FROM (SELECT i, $midnight::TIMESTAMPTZ
                      + to_microseconds(((i - $first) * 86400000000 // $n)::BIGINT) AS t
            FROM range($lo, $hi) r(i)))
