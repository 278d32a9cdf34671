-- Muxed deposits and the wallet history, postgres dialect. Kept column-for-column identical to
-- the other dialect.
--
-- deposits.muxed_id: the id of the muxed (M...) address a deposit was sent to, in decimal text (a
-- u64 does not fit a signed 64-bit column); NULL for a plain G... destination. The
-- `deposit.received` event carries it too.
--
-- wallet_history: one row per outgoing payment and per deposit of a wallet, numbered by the
-- database in the order the gateway recorded them (the inserting statement's transaction), so a
-- page cursor (`id`) never skips nor repeats an entry that was there when a walk began. Existing
-- rows are numbered by their created_at.
ALTER TABLE deposits ADD COLUMN muxed_id TEXT;

CREATE OR REPLACE FUNCTION deposits_record_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    next_sequence BIGINT;
    event_row BIGINT;
    now_ms BIGINT := CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT);
BEGIN
    INSERT INTO wallet_event_sequences (wallet_id, last_sequence) VALUES (NEW.wallet_id, 1)
        ON CONFLICT (wallet_id) DO UPDATE SET last_sequence = wallet_event_sequences.last_sequence + 1
        RETURNING last_sequence INTO next_sequence;
    INSERT INTO outbox_events (wallet_id, wallet_sequence, event_type, subject_id, payload, occurred_at, created_at_ms)
    VALUES (NEW.wallet_id, next_sequence, 'deposit.received', CAST(NEW.operation_id AS TEXT),
        json_build_object('id', CAST(NEW.operation_id AS TEXT), 'wallet_id', NEW.wallet_id,
            'account', NEW.account, 'muxed_id', NEW.muxed_id, 'kind', NEW.kind,
            'source_account', NEW.source_account,
            'amount_stroops', NEW.amount_stroops, 'asset_code', NEW.asset_code, 'asset_issuer', NEW.asset_issuer,
            'memo', NEW.memo, 'memo_type', NEW.memo_type, 'ledger', NEW.ledger,
            'tx_hash', NEW.tx_hash, 'created_at', NEW.created_at)::text,
        NEW.created_at, now_ms)
    RETURNING id INTO event_row;
    INSERT INTO webhook_deliveries (endpoint_id, event_id, wallet_id, wallet_sequence, state, attempts, due_at_ms, created_at_ms)
    SELECT w.id, event_row, NEW.wallet_id, next_sequence, 'PENDING', 0, now_ms, now_ms
    FROM webhook_endpoints w
    WHERE w.deleted_at IS NULL AND strpos(w.event_types, ',deposit.received,') > 0;
    RETURN NULL;
END
$$;

CREATE TABLE wallet_history (
    id          BIGSERIAL PRIMARY KEY,
    wallet_id   TEXT NOT NULL REFERENCES wallets (id),
    payment_id  TEXT,
    deposit_id  BIGINT,
    CHECK ((payment_id IS NULL) <> (deposit_id IS NULL))
);
CREATE INDEX wallet_history_wallet ON wallet_history (wallet_id, id);

INSERT INTO wallet_history (wallet_id, payment_id, deposit_id)
SELECT wallet_id, payment_id, deposit_id FROM (
    SELECT source_wallet_id AS wallet_id, id AS payment_id, CAST(NULL AS BIGINT) AS deposit_id, created_at, 0 AS side
    FROM payments
    UNION ALL
    SELECT wallet_id, NULL, operation_id, created_at, 1 FROM deposits
) existing ORDER BY created_at, side, payment_id, deposit_id;

CREATE FUNCTION wallet_history_of_payment() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO wallet_history (wallet_id, payment_id) VALUES (NEW.source_wallet_id, NEW.id);
    RETURN NULL;
END
$$;
CREATE TRIGGER payments_wallet_history AFTER INSERT ON payments
    FOR EACH ROW EXECUTE FUNCTION wallet_history_of_payment();

CREATE FUNCTION wallet_history_of_deposit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO wallet_history (wallet_id, deposit_id) VALUES (NEW.wallet_id, NEW.operation_id);
    RETURN NULL;
END
$$;
CREATE TRIGGER deposits_wallet_history AFTER INSERT ON deposits
    FOR EACH ROW EXECUTE FUNCTION wallet_history_of_deposit();
