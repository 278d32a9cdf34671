-- Issue 14 (deposits), postgres dialect. Kept column-for-column identical to the other dialect.
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

CREATE FUNCTION deposits_record_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
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
            'account', NEW.account, 'kind', NEW.kind, 'source_account', NEW.source_account,
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

CREATE TRIGGER deposits_outbox AFTER INSERT ON deposits
    FOR EACH ROW EXECUTE FUNCTION deposits_record_outbox();
