-- Fewer indexes keyed at random, for click day: every index whose key is spread over the whole
-- tree costs each batch one page of log per claim. The idempotency key is now unique per
-- applicant (one index serves both the retry lookup and the citizen's list), and only patronato
-- filings are indexed by filer.
ALTER TABLE claims DROP CONSTRAINT claims_idempotency_key_key;
DROP INDEX claims_by_citizen;
CREATE UNIQUE INDEX claims_by_citizen ON claims (fiscal_code, idempotency_key);
DROP INDEX claims_by_filer;
CREATE INDEX claims_by_patronato ON claims (filed_by_id, submitted_at, id)
    WHERE filed_by_role = 'PATRONATO';
