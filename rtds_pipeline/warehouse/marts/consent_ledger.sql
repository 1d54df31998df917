-- consent_ledger: the consent record of every email address and phone number (MSISDN).
-- Grain: event_id, message_type (one row per consent-relevant event × message type it changed;
-- an event that changed nothing — a bounce, a keyword match, a double opt-in request — is kept
-- with message_type and state NULL)
-- Unique key: address
-- Refresh: incremental, the addresses the new rows touch (an address's rows are renumbered).
-- Nullable: message_type, state (the event changed no consent state: a bounce, a keyword
-- match, an SMS double opt-in request (api_initiate_opt_in), a terminated message, an rnd_scan,
-- a carrier deactivation that uninstalled, a registration or list event that set no date or
-- list), properties (the event has none: FIRST_OPT_IN, SUBSCRIPTION_LIST, an SMS opted_out …),
-- processed (the event came without a processed time; occurred stands in for it in its day)
-- Sources: COMPLIANCE (compliance_events, /api/events/general); SUBSCRIPTION, FIRST_OPT_IN and
-- SUBSCRIPTION_LIST of email/SMS channels (events). In order per address: occurred, then stream
-- position. `ledger_seq` numbers the rows of an address from 1.
WITH base AS (
    SELECT id, type, occurred, processed, rtds_offset, stream, address, address_type, action, props,
           enrolled, canceled
    FROM stg_events
    WHERE (stream = 'compliance'
           OR (type IN ('SUBSCRIPTION', 'FIRST_OPT_IN', 'SUBSCRIPTION_LIST')
               AND device_type IN ('EMAIL', 'SMS')))
      AND address IS NOT NULL AND in_scope(address)
),
derived AS (
    SELECT *,
        list_concat(
            list_filter([
                CASE WHEN props->>'commercial_opted_in' IS NOT NULL
                     THEN {'message_type': 'commercial', 'state': 'opted_in'} END,
                CASE WHEN props->>'commercial_opted_out' IS NOT NULL
                     THEN {'message_type': 'commercial', 'state': 'opted_out'} END,
                CASE WHEN props->>'transactional_opted_in' IS NOT NULL
                     THEN {'message_type': 'transactional', 'state': 'opted_in'} END,
                CASE WHEN props->>'transactional_opted_out' IS NOT NULL
                     THEN {'message_type': 'transactional', 'state': 'opted_out'} END,
                CASE WHEN props->>'opted_in' IS NOT NULL OR action = 'mobile_opt_in'
                     THEN {'message_type': 'sms', 'state': 'opted_in'} END,
                CASE WHEN props->>'opted_out' IS NOT NULL OR action IN ('mobile_opt_out', 'opted_out')
                     THEN {'message_type': 'sms', 'state': 'opted_out'} END,
                CASE WHEN action = 'carrier_deactivation' AND props->>'action' = 'suppressed'
                     THEN {'message_type': 'sms', 'state': 'suppressed'} END,
                CASE WHEN type = 'FIRST_OPT_IN'
                     THEN {'message_type': CASE address_type WHEN 'sms' THEN 'sms' ELSE 'commercial' END,
                           'state': 'opted_in'} END
            ], lambda x: x IS NOT NULL),
            list_transform(coalesce(enrolled, []),
                           lambda n: {'message_type': 'list:' || n, 'state': 'subscribed'}),
            list_transform(coalesce(canceled, []),
                           lambda n: {'message_type': 'list:' || n, 'state': 'unsubscribed'})
        ) AS changes
    FROM base
),
rows AS (
    SELECT d.*, c.change
    FROM derived d,
         unnest(CASE WHEN len(d.changes) = 0
                     THEN [NULL::STRUCT(message_type VARCHAR, state VARCHAR)]
                     ELSE d.changes END) AS c(change)
)
SELECT address, address_type,
       row_number() OVER (PARTITION BY address
                          ORDER BY occurred, lpad(rtds_offset, 24, '0'), change.message_type)
           AS ledger_seq,
       occurred, processed,
       change.message_type AS message_type, change.state AS state,
       action, type AS event_type,
       coalesce(props->>'source', props->>'keyword', stream) AS consent_source,
       props AS properties, id AS event_id, rtds_offset, stream
FROM rows
ORDER BY address, ledger_seq
