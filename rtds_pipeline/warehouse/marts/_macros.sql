-- Macros the marts share (temporary: created on the writer's connection before each refresh).

-- message_event: what an Airship-defined message event is, or NULL for anything else.
-- Airship reports email engagement and SMS delivery as CUSTOM events (rtds-protocol.md §6):
--   email: source API on an EMAIL device, name delivery | injection | open | initial_open |
--          delay | bounce | click | unsubscribe            → 'email_<name>'
--   SMS:   interaction_type delivery_report on an SMS device, name dispatched | delivered |
--          failed | … | read (RCS)                        → 'sms_<name>'
-- They describe a message's fate, not what app users did: they are not custom events.
CREATE OR REPLACE TEMP MACRO message_event(device_type, raw) AS CASE
    WHEN device_type = 'EMAIL' AND raw->>'$.body.source' = 'API'
         AND raw->>'$.body.name' IN ('delivery', 'injection', 'open', 'initial_open', 'delay',
                                     'bounce', 'click', 'unsubscribe')
        THEN 'email_' || (raw->>'$.body.name')
    WHEN device_type = 'SMS' AND raw->>'$.body.interaction_type' = 'delivery_report'
        THEN 'sms_' || coalesce(raw->>'$.body.name', 'unknown')
END;
