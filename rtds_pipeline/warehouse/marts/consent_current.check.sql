-- Every current state must be the state of the address's last ledger row for that type.
SELECT c.address, c.message_type, c.state FROM consent_current c
JOIN (SELECT address, message_type, arg_max(state, ledger_seq) AS last_state
      FROM consent_ledger WHERE message_type IS NOT NULL GROUP BY ALL) l
  USING (address, message_type)
WHERE c.state IS DISTINCT FROM l.last_state
