-- Issue 12, sqlite dialect. Kept column-for-column identical to the other dialect.
--
-- NEEDS_ATTENTION: a payment whose sequence number was used while none of its own transactions
-- can be shown applied (another signer of the account took it and the history that would tell
-- is pruned, or the account's history never shows it). It is parked for an operator (the admin
-- resolve route) instead of being confirmed forever, and no longer blocks its wallet: its
-- sequence is spent, so none of its transactions can apply any more.
--
-- SQLite cannot change a CHECK constraint in place: the table is rebuilt. Foreign keys stay on
-- (the migration runs in one transaction, where SQLite ignores turning them off), so the two
-- tables that reference payments are rebuilt with it: new tables are filled, the old ones
-- dropped children first (no row ever loses its parent), and the renames point the new
-- children's references at the new `payments`.
CREATE TABLE payments_rebuilt (
    id                   TEXT PRIMARY KEY,
    api_key_id           TEXT NOT NULL REFERENCES api_keys (id),
    idempotency_key      TEXT NOT NULL,
    source_wallet_id     TEXT NOT NULL REFERENCES wallets (id),
    destination          TEXT NOT NULL,
    destination_account  TEXT NOT NULL,
    amount_stroops       INTEGER NOT NULL CHECK (amount_stroops > 0),
    memo                 TEXT,
    status               TEXT NOT NULL CHECK (status IN ('CREATED', 'SIGNED', 'SUBMITTED', 'SUCCESS', 'FAILED', 'NEEDS_ATTENTION')),
    sequence             INTEGER,
    max_time             INTEGER,
    tx_hash              TEXT,
    envelope_xdr         TEXT,
    fee_stroops          INTEGER,
    ledger               INTEGER,
    result_codes         TEXT,
    failure_reason       TEXT,
    attempts             INTEGER NOT NULL DEFAULT 0,
    builds               INTEGER NOT NULL DEFAULT 0,
    next_attempt_at      TEXT NOT NULL,
    created_at           TEXT NOT NULL,
    updated_at           TEXT NOT NULL,
    status_detail        TEXT,
    request_hash         TEXT,
    UNIQUE (api_key_id, idempotency_key)
);
INSERT INTO payments_rebuilt (id, api_key_id, idempotency_key, source_wallet_id, destination,
    destination_account, amount_stroops, memo, status, sequence, max_time, tx_hash, envelope_xdr,
    fee_stroops, ledger, result_codes, failure_reason, attempts, builds, next_attempt_at,
    created_at, updated_at, status_detail, request_hash)
SELECT id, api_key_id, idempotency_key, source_wallet_id, destination,
    destination_account, amount_stroops, memo, status, sequence, max_time, tx_hash, envelope_xdr,
    fee_stroops, ledger, result_codes, failure_reason, attempts, builds, next_attempt_at,
    created_at, updated_at, status_detail, request_hash
FROM payments;
CREATE TABLE payment_events_rebuilt (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    payment_id   TEXT NOT NULL REFERENCES payments_rebuilt (id),
    status       TEXT NOT NULL,
    tx_hash      TEXT,
    detail       TEXT,
    occurred_at  TEXT NOT NULL
);
INSERT INTO payment_events_rebuilt (id, payment_id, status, tx_hash, detail, occurred_at)
SELECT id, payment_id, status, tx_hash, detail, occurred_at FROM payment_events;

CREATE TABLE payment_transactions_rebuilt (
    tx_hash      TEXT PRIMARY KEY,
    payment_id   TEXT NOT NULL REFERENCES payments_rebuilt (id),
    sequence     INTEGER NOT NULL,
    max_time     INTEGER NOT NULL,
    created_at   TEXT NOT NULL
);
INSERT INTO payment_transactions_rebuilt (tx_hash, payment_id, sequence, max_time, created_at)
SELECT tx_hash, payment_id, sequence, max_time, created_at FROM payment_transactions;

DROP TABLE payment_events;
DROP TABLE payment_transactions;
DROP TABLE payments;
ALTER TABLE payments_rebuilt RENAME TO payments;
ALTER TABLE payment_events_rebuilt RENAME TO payment_events;
ALTER TABLE payment_transactions_rebuilt RENAME TO payment_transactions;
CREATE INDEX payment_events_payment ON payment_events (payment_id, id);
CREATE INDEX payment_transactions_payment ON payment_transactions (payment_id);
CREATE INDEX payments_source_status ON payments (source_wallet_id, status, id);
CREATE INDEX payments_pending ON payments (status, next_attempt_at);

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

-- Leases with a fencing token. `epoch` grows by one every time the lease changes hands (rows are
-- never deleted, a release only expires them), and every payment transition names the owner and
-- epoch it holds: a worker whose lease expired and was taken over cannot write anything.
-- `expires_at_ms` is in the database's clock (milliseconds since the Unix epoch), never a
-- replica's, so replicas with skewed clocks agree on who holds a wallet.
DROP TABLE payment_leases;
CREATE TABLE payment_leases (
    wallet_id      TEXT PRIMARY KEY REFERENCES wallets (id),
    owner          TEXT NOT NULL,
    epoch          INTEGER NOT NULL CHECK (epoch > 0),
    expires_at_ms  INTEGER NOT NULL
);
