-- A payment batch may be taken back before it is confirmed: when, by whom and why. Its claims
-- return to APPROVED and leave the batch (payment_batch_id cleared), so another may take them.
ALTER TABLE payment_batches ADD COLUMN cancelled_at INTEGER;
ALTER TABLE payment_batches ADD COLUMN cancelled_by TEXT;
ALTER TABLE payment_batches ADD COLUMN cancel_reason TEXT;
-- Only a submitted claim waits for the automatic decision: a claim withdrawn or decided while
-- the bank check was failing kept its next attempt, and the decider kept asking the bank.
UPDATE claims SET decide_at = NULL, leased_until = NULL WHERE status <> 'SUBMITTED';
