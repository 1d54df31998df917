-- The addresses whose ledger this refresh rewrote.
SELECT k FROM scope_consent_ledger
