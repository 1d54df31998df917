-- The addresses of the changed consent-relevant rows.
SELECT DISTINCT address AS k FROM mart_changes
WHERE address IS NOT NULL
  AND (stream = 'compliance'
       OR (type IN ('SUBSCRIPTION', 'FIRST_OPT_IN', 'SUBSCRIPTION_LIST')
           AND device_type IN ('EMAIL', 'SMS')))
