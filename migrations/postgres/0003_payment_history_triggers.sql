-- The database writes a payment's history itself, in the statement that changes the payment:
-- every status change becomes a payment_events row, and every newly signed transaction hash a
-- payment_transactions row. A transition is then one statement (one round trip, atomic without
-- an explicit transaction), and no code path, nor a manual UPDATE, can change a status without
-- leaving its trace.
--
-- status_detail: what the latest transition says (copied into its event).
-- request_hash: the SHA-256 of the POST that created the payment, so a replay of its
-- Idempotency-Key is told apart from a conflicting reuse without a separate claim row.
ALTER TABLE payments ADD COLUMN status_detail TEXT;
ALTER TABLE payments ADD COLUMN request_hash TEXT;

CREATE FUNCTION payments_record_history() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.status IS DISTINCT FROM OLD.status THEN
        INSERT INTO payment_events (payment_id, status, tx_hash, detail, occurred_at)
        VALUES (NEW.id, NEW.status, NEW.tx_hash, NEW.status_detail, NEW.updated_at);
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.status = 'SIGNED' AND NEW.tx_hash IS NOT NULL
       AND NEW.tx_hash IS DISTINCT FROM OLD.tx_hash THEN
        INSERT INTO payment_transactions (tx_hash, payment_id, sequence, max_time, created_at)
        VALUES (NEW.tx_hash, NEW.id, NEW.sequence, NEW.max_time, NEW.updated_at);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER payments_history AFTER INSERT OR UPDATE ON payments
    FOR EACH ROW EXECUTE FUNCTION payments_record_history();
