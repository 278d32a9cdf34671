-- Issue 14, postgres dialect. Kept column-for-column identical to the other dialect.
--
-- The event outbox: every payment status change becomes an outbox_events row, written by a
-- trigger in the statement that changes the payment (so in its transaction by construction,
-- whichever code path wrote it: the accepting API, the fenced worker, an admin resolve). Each
-- event gets the next number of its wallet (wallet_event_sequences, bumped by the same trigger:
-- the row lock of the bump serialises a wallet's writers until commit, so numbers commit in
-- order and without gaps).
--
-- The trigger also fans the event out to every live webhook endpoint subscribed to its type:
-- one webhook_deliveries row each, which the dispatcher claims (FOR UPDATE SKIP LOCKED, then a
-- lease by the database's clock). Times in *_ms columns are milliseconds since the Unix epoch by
-- the database's clock.
CREATE TABLE wallet_event_sequences (
    wallet_id      TEXT PRIMARY KEY REFERENCES wallets (id),
    last_sequence  BIGINT NOT NULL
);

CREATE TABLE outbox_events (
    id               BIGSERIAL PRIMARY KEY,
    wallet_id        TEXT NOT NULL REFERENCES wallets (id),
    wallet_sequence  BIGINT NOT NULL,
    event_type       TEXT NOT NULL,
    subject_id       TEXT NOT NULL,
    payload          TEXT NOT NULL,
    occurred_at      TEXT NOT NULL,
    created_at_ms    BIGINT NOT NULL,
    UNIQUE (wallet_id, wallet_sequence)
);

-- event_types: the subscribed types between commas (`,payment.created,payment.failed,`), so a
-- trigger matches one with a substring test in either dialect.
-- previous_secret: the secret before the last rotation; it signs too until
-- previous_secret_until_ms.
CREATE TABLE webhook_endpoints (
    id                        TEXT PRIMARY KEY,
    url                       TEXT NOT NULL,
    event_types               TEXT NOT NULL,
    secret                    TEXT NOT NULL,
    previous_secret           TEXT,
    previous_secret_until_ms  BIGINT,
    created_at                TEXT NOT NULL,
    deleted_at                TEXT
);

-- state: PENDING (to send, or being sent under a lease), DELIVERED, DEAD (retry budget spent),
-- CANCELLED (its endpoint was deleted). A PENDING delivery waits while an earlier one of the
-- same wallet to the same endpoint is PENDING: per-wallet order per endpoint.
CREATE TABLE webhook_deliveries (
    id               BIGSERIAL PRIMARY KEY,
    endpoint_id      TEXT NOT NULL REFERENCES webhook_endpoints (id),
    event_id         BIGINT NOT NULL REFERENCES outbox_events (id),
    wallet_id        TEXT NOT NULL,
    wallet_sequence  BIGINT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('PENDING', 'DELIVERED', 'DEAD', 'CANCELLED')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    due_at_ms        BIGINT NOT NULL,
    lease_owner      TEXT,
    lease_until_ms   BIGINT,
    created_at_ms    BIGINT NOT NULL,
    last_attempt_at  TEXT,
    last_status      INTEGER,
    last_error       TEXT,
    finished_at      TEXT,
    UNIQUE (endpoint_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, due_at_ms);
CREATE INDEX webhook_deliveries_order ON webhook_deliveries (endpoint_id, wallet_id, state, wallet_sequence);

CREATE FUNCTION payments_record_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    next_sequence BIGINT;
    event_row BIGINT;
    now_ms BIGINT := CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT);
    kind TEXT;
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.status IS NOT DISTINCT FROM OLD.status THEN
        RETURN NULL;
    END IF;
    INSERT INTO wallet_event_sequences (wallet_id, last_sequence) VALUES (NEW.source_wallet_id, 1)
        ON CONFLICT (wallet_id) DO UPDATE SET last_sequence = wallet_event_sequences.last_sequence + 1
        RETURNING last_sequence INTO next_sequence;
    kind := CASE NEW.status WHEN 'CREATED' THEN 'payment.created' WHEN 'SIGNED' THEN 'payment.signed'
        WHEN 'SUBMITTED' THEN 'payment.submitted' WHEN 'SUCCESS' THEN 'payment.succeeded'
        WHEN 'FAILED' THEN 'payment.failed' ELSE 'payment.needs_attention' END;
    INSERT INTO outbox_events (wallet_id, wallet_sequence, event_type, subject_id, payload, occurred_at, created_at_ms)
    VALUES (NEW.source_wallet_id, next_sequence, kind, NEW.id,
        json_build_object('id', NEW.id, 'status', NEW.status, 'source_wallet_id', NEW.source_wallet_id,
            'destination', NEW.destination, 'destination_account', NEW.destination_account,
            'amount_stroops', NEW.amount_stroops, 'memo', NEW.memo, 'tx_hash', NEW.tx_hash,
            'sequence', NEW.sequence, 'ledger', NEW.ledger, 'fee_stroops', NEW.fee_stroops,
            'failure_reason', NEW.failure_reason, 'detail', NEW.status_detail,
            'created_at', NEW.created_at, 'updated_at', NEW.updated_at)::text,
        NEW.updated_at, now_ms)
    RETURNING id INTO event_row;
    INSERT INTO webhook_deliveries (endpoint_id, event_id, wallet_id, wallet_sequence, state, attempts, due_at_ms, created_at_ms)
    SELECT w.id, event_row, NEW.source_wallet_id, next_sequence, 'PENDING', 0, now_ms, now_ms
    FROM webhook_endpoints w
    WHERE w.deleted_at IS NULL AND strpos(w.event_types, ',' || kind || ',') > 0;
    RETURN NULL;
END
$$;

CREATE TRIGGER payments_outbox AFTER INSERT OR UPDATE OF status ON payments
    FOR EACH ROW EXECUTE FUNCTION payments_record_outbox();
