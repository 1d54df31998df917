-- stg_events: the rows of events and compliance_events as the marts read them, every JSON path
-- extracted here once (marts never read `raw`). Kept in the writer's state as a table: each load
-- appends the staging of its new rows (warehouse/staging.py), so a mart refresh finds what
-- changed without scanning the lake. Placeholders: {rows} (rows shaped like `events`), {stream}.
SELECT id, '{stream}' AS stream, type, occurred, processed, occurred_date, rtds_offset, copies,
       device_type, channel, push_id, group_id, session_id,
       -- session_key: an 8-byte key of session_id, which the sessions mart refreshes by (a
       -- semi-join on it probes one fixed-width column instead of hashing every session id)
       key_hi(md5_number(session_id)) AS session_key, triggering_push_id,
       last_delivered_push_id, custom_event_name, custom_event_value, app_version, country,
       message_event(device_type, raw) AS message_event,
       TRY_CAST(raw->>'$.body.variant_id' AS INTEGER) AS variant_id,
       TRY_CAST(raw->>'$.body.triggering_push.variant_id' AS INTEGER) AS triggering_variant_id,
       TRY_CAST(raw->>'$.body.last_delivered.variant_id' AS INTEGER) AS last_delivered_variant_id,
       TRY_CAST(raw->>'$.body.last_delivered.time' AS TIMESTAMPTZ) AS last_delivered_at,
       raw->>'$.body.type' AS body_type,
       raw->>'$.body.status' AS body_status,
       raw->>'$.body.reason' AS body_reason,
       coalesce(TRY_CAST(raw->>'$.body.decay' AS BOOLEAN), false) AS decay,
       raw->>'$.device.attributes.push_opt_in' = 'true' AS push_opt_in,
       -- PUSH_BODY: the push's payload
       CASE WHEN type = 'PUSH_BODY' THEN
           TRY_CAST(TRY(decode(from_base64(raw->>'$.body.payload'))) AS JSON) END AS payload,
       CASE WHEN type = 'PUSH_BODY' THEN
           (raw->'$.body.campaigns.categories')::VARCHAR[] END AS categories,
       CASE WHEN type = 'PUSH_BODY' THEN
           TRY_CAST(raw->>'$.body.trimmed' AS BOOLEAN) END AS payload_trimmed,
       -- consent: who (an email address or an MSISDN) and what the event says
       coalesce(raw->>'$.body.identifiers.address', raw->>'$.body.identifiers.msisdn',
                raw->>'$.device.delivery_address') AS address,
       CASE WHEN raw->>'$.body.identifiers.msisdn' IS NOT NULL
              OR raw->>'$.device.device_type' = 'SMS' THEN 'sms' ELSE 'email' END AS address_type,
       coalesce(raw->>'$.body.event_type', lower(type)) AS action,
       raw->'$.body.properties' AS props,
       TRY_CAST(raw->'$.body.enrolled' AS VARCHAR[]) AS enrolled,
       TRY_CAST(raw->'$.body.canceled' AS VARCHAR[]) AS canceled
FROM {rows}
