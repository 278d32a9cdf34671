-- The database writes a payment's history itself, in the statement that changes the payment:
-- every status change becomes a payment_events row, and every newly signed transaction hash a
-- payment_transactions row. A transition is then one statement (atomic without an explicit
-- transaction), and no code path, nor a manual UPDATE, can change a status without leaving its
-- trace.
--
-- status_detail: what the latest transition says (copied into its event).
-- request_hash: the SHA-256 of the POST that created the payment, so a replay of its
-- Idempotency-Key is told apart from a conflicting reuse without a separate claim row.
ALTER TABLE payments ADD COLUMN status_detail TEXT;
ALTER TABLE payments ADD COLUMN request_hash TEXT;

CREATE TRIGGER payments_history_insert AFTER INSERT ON payments
BEGIN
    INSERT INTO payment_events (payment_id, status, tx_hash, detail, occurred_at)
    VALUES (NEW.id, NEW.status, NEW.tx_hash, NEW.status_detail, NEW.updated_at);
END;

CREATE TRIGGER payments_history_update AFTER UPDATE OF status ON payments
WHEN NEW.status IS NOT OLD.status
BEGIN
    INSERT INTO payment_events (payment_id, status, tx_hash, detail, occurred_at)
    VALUES (NEW.id, NEW.status, NEW.tx_hash, NEW.status_detail, NEW.updated_at);
END;

CREATE TRIGGER payments_signed_transaction AFTER UPDATE OF tx_hash ON payments
WHEN NEW.status = 'SIGNED' AND NEW.tx_hash IS NOT NULL AND NEW.tx_hash IS NOT OLD.tx_hash
BEGIN
    INSERT INTO payment_transactions (tx_hash, payment_id, sequence, max_time, created_at)
    VALUES (NEW.tx_hash, NEW.id, NEW.sequence, NEW.max_time, NEW.updated_at);
END;
