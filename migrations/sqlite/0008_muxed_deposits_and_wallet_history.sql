-- Muxed deposits and the wallet history, sqlite dialect. Kept column-for-column identical to the
-- other dialect.
--
-- deposits.muxed_id: the id of the muxed (M...) address a deposit was sent to, in decimal text (a
-- u64 does not fit a signed 64-bit column); NULL for a plain G... destination. The
-- `deposit.received` event carries it too.
--
-- wallet_history: one row per outgoing payment and per deposit of a wallet, numbered by the
-- database in the order the gateway recorded them (the inserting statement's transaction), so a
-- page cursor (`id`) never skips nor repeats an entry when newer ones arrive: a new entry always
-- gets a larger id than every entry already there. Existing rows are numbered by their
-- created_at.
ALTER TABLE deposits ADD COLUMN muxed_id TEXT;

DROP TRIGGER deposits_outbox_insert;
CREATE TRIGGER deposits_outbox_insert AFTER INSERT ON deposits
BEGIN
    INSERT OR IGNORE INTO wallet_event_sequences (wallet_id, last_sequence) VALUES (NEW.wallet_id, 0);
    UPDATE wallet_event_sequences SET last_sequence = last_sequence + 1 WHERE wallet_id = NEW.wallet_id;
    INSERT INTO outbox_events (wallet_id, wallet_sequence, event_type, subject_id, payload, occurred_at, created_at_ms)
    SELECT NEW.wallet_id, s.last_sequence, 'deposit.received', CAST(NEW.operation_id AS TEXT),
        json_object('id', CAST(NEW.operation_id AS TEXT), 'wallet_id', NEW.wallet_id,
            'account', NEW.account, 'muxed_id', NEW.muxed_id, 'kind', NEW.kind,
            'source_account', NEW.source_account,
            'amount_stroops', NEW.amount_stroops, 'asset_code', NEW.asset_code, 'asset_issuer', NEW.asset_issuer,
            'memo', NEW.memo, 'memo_type', NEW.memo_type, 'ledger', NEW.ledger,
            'tx_hash', NEW.tx_hash, 'created_at', NEW.created_at),
        NEW.created_at, CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)
    FROM wallet_event_sequences s WHERE s.wallet_id = NEW.wallet_id;
    INSERT INTO webhook_deliveries (endpoint_id, event_id, wallet_id, wallet_sequence, state, attempts, due_at_ms, created_at_ms)
    SELECT w.id, o.id, o.wallet_id, o.wallet_sequence, 'PENDING', 0, o.created_at_ms, o.created_at_ms
    FROM outbox_events o JOIN wallet_event_sequences s
        ON s.wallet_id = o.wallet_id AND s.last_sequence = o.wallet_sequence
    JOIN webhook_endpoints w ON w.deleted_at IS NULL AND instr(w.event_types, ',' || o.event_type || ',') > 0
    WHERE o.wallet_id = NEW.wallet_id;
END;

CREATE TABLE wallet_history (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    wallet_id   TEXT NOT NULL REFERENCES wallets (id),
    payment_id  TEXT,
    deposit_id  BIGINT,
    CHECK ((payment_id IS NULL) <> (deposit_id IS NULL))
);
CREATE INDEX wallet_history_wallet ON wallet_history (wallet_id, id);

INSERT INTO wallet_history (wallet_id, payment_id, deposit_id)
SELECT wallet_id, payment_id, deposit_id FROM (
    SELECT source_wallet_id AS wallet_id, id AS payment_id, NULL AS deposit_id, created_at, 0 AS side
    FROM payments
    UNION ALL
    SELECT wallet_id, NULL, operation_id, created_at, 1 FROM deposits
) ORDER BY created_at, side, payment_id, deposit_id;

CREATE TRIGGER payments_wallet_history AFTER INSERT ON payments
BEGIN
    INSERT INTO wallet_history (wallet_id, payment_id) VALUES (NEW.source_wallet_id, NEW.id);
END;

CREATE TRIGGER deposits_wallet_history AFTER INSERT ON deposits
BEGIN
    INSERT INTO wallet_history (wallet_id, deposit_id) VALUES (NEW.wallet_id, NEW.operation_id);
END;
