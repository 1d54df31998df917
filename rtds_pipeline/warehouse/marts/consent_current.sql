-- consent_current: the latest consent state per address and message type.
-- Grain: address, message_type
-- Unique key: address
-- Refresh: incremental, the addresses the new rows touch, from consent_ledger (its last row
-- that set a state for that message type wins; the ledger's order is occurred, then stream
-- position).
-- Nullable: none (the ledger's rows without a message type, which set no state, are left out)
SELECT address, min(address_type) AS address_type, message_type,
       arg_max(state, ledger_seq) AS state,
       max(occurred) AS since,
       arg_max(consent_source, ledger_seq) AS consent_source,
       arg_max(event_id, ledger_seq) AS event_id,
       count(*) AS changes
FROM consent_ledger
WHERE message_type IS NOT NULL AND in_scope(address)
GROUP BY address, message_type
ORDER BY address, message_type
