-- Issue 14 (deposits), sqlite dialect. Kept column-for-column identical to the other dialect.
--
-- deposits: one row per operation crediting a wallet, keyed by Horizon's operation id (TOID),
-- so an operation is recorded once whatever happens. deposit_cursor: the last ledger ingested,
-- advanced in the same transaction as that range's deposits. deposit_lease: the one replica
-- allowed to ingest (by the database's clock; epoch grows with each takeover and fences the
-- cursor update). A trigger writes a `deposit.received` outbox event per deposit, in the
-- inserting statement's transaction, numbered in the wallet's event sequence.
CREATE TABLE deposits (
    operation_id    BIGINT PRIMARY KEY,
    wallet_id       TEXT NOT NULL REFERENCES wallets (id),
    account         TEXT NOT NULL,
    kind            TEXT NOT NULL,
    source_account  TEXT NOT NULL,
    amount_stroops  BIGINT NOT NULL,
    asset_code      TEXT,
    asset_issuer    TEXT,
    memo            TEXT,
    memo_type       TEXT,
    ledger          BIGINT NOT NULL,
    tx_hash         TEXT NOT NULL,
    created_at      TEXT NOT NULL
);
CREATE INDEX deposits_wallet ON deposits (wallet_id, operation_id);

CREATE TABLE deposit_cursor (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    ledger  BIGINT NOT NULL
);

CREATE TABLE deposit_lease (
    id             INTEGER PRIMARY KEY CHECK (id = 1),
    owner          TEXT NOT NULL,
    epoch          BIGINT NOT NULL,
    expires_at_ms  BIGINT NOT NULL
);

CREATE TRIGGER deposits_outbox_insert AFTER INSERT ON deposits
BEGIN
    INSERT OR IGNORE INTO wallet_event_sequences (wallet_id, last_sequence) VALUES (NEW.wallet_id, 0);
    UPDATE wallet_event_sequences SET last_sequence = last_sequence + 1 WHERE wallet_id = NEW.wallet_id;
    INSERT INTO outbox_events (wallet_id, wallet_sequence, event_type, subject_id, payload, occurred_at, created_at_ms)
    SELECT NEW.wallet_id, s.last_sequence, 'deposit.received', CAST(NEW.operation_id AS TEXT),
        json_object('id', CAST(NEW.operation_id AS TEXT), 'wallet_id', NEW.wallet_id,
            'account', NEW.account, 'kind', NEW.kind, 'source_account', NEW.source_account,
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
