-- The ledger of an address must be numbered 1..n without gaps, and no event twice per type.
SELECT address, count(*) AS n, max(ledger_seq) AS last_seq FROM consent_ledger
GROUP BY address HAVING max(ledger_seq) <> count(*) OR min(ledger_seq) <> 1
UNION ALL
SELECT event_id, count(*), NULL FROM consent_ledger
GROUP BY event_id, message_type HAVING count(*) > 1
