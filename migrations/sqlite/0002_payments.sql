-- Payments (issue 6), sqlite dialect. Kept column-for-column identical to the other dialect.
-- Amounts are stroops (1 XLM = 10^7 stroops) in 64-bit integers; times are RFC 3339 UTC text.

-- One row per accepted payment. The worker drives status CREATED -> SIGNED -> SUBMITTED ->
-- SUCCESS | FAILED. envelope_xdr and tx_hash are written (status SIGNED) before the first
-- submission and are only ever replaced by a rebuild, which happens once Horizon shows the old
-- hash absent, a closed ledger past max_time and the sequence number unused.
CREATE TABLE payments (
    id                   TEXT PRIMARY KEY,
    api_key_id           TEXT NOT NULL REFERENCES api_keys (id),
    idempotency_key      TEXT NOT NULL,
    source_wallet_id     TEXT NOT NULL REFERENCES wallets (id),
    destination          TEXT NOT NULL,
    destination_account  TEXT NOT NULL,
    amount_stroops       INTEGER NOT NULL CHECK (amount_stroops > 0),
    memo                 TEXT,
    status               TEXT NOT NULL CHECK (status IN ('CREATED', 'SIGNED', 'SUBMITTED', 'SUCCESS', 'FAILED')),
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
    UNIQUE (api_key_id, idempotency_key)
);
CREATE INDEX payments_source_status ON payments (source_wallet_id, status, id);
CREATE INDEX payments_pending ON payments (status, next_attempt_at);

-- Every status change (and every rebuilt transaction), oldest first.
CREATE TABLE payment_events (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    payment_id   TEXT NOT NULL REFERENCES payments (id),
    status       TEXT NOT NULL,
    tx_hash      TEXT,
    detail       TEXT,
    occurred_at  TEXT NOT NULL
);
CREATE INDEX payment_events_payment ON payment_events (payment_id, id);

-- Every transaction hash ever signed for a payment: a rebuild keeps the older ones here so the
-- worker can still find whichever of them Horizon applied.
CREATE TABLE payment_transactions (
    tx_hash      TEXT PRIMARY KEY,
    payment_id   TEXT NOT NULL REFERENCES payments (id),
    sequence     INTEGER NOT NULL,
    max_time     INTEGER NOT NULL,
    created_at   TEXT NOT NULL
);
CREATE INDEX payment_transactions_payment ON payment_transactions (payment_id);

-- One worker at a time per source wallet (one transaction in flight per source account), across
-- replicas: a lease that expires if its owner dies.
CREATE TABLE payment_leases (
    wallet_id     TEXT PRIMARY KEY REFERENCES wallets (id),
    owner         TEXT NOT NULL,
    locked_until  TEXT NOT NULL
);

-- Per-wallet, per-UTC-day usage, bumped atomically with the payment insert (the conditional
-- upsert is what makes daily limits hold across replicas).
CREATE TABLE wallet_daily_usage (
    wallet_id       TEXT NOT NULL REFERENCES wallets (id),
    day             TEXT NOT NULL,
    payment_count   INTEGER NOT NULL,
    amount_stroops  INTEGER NOT NULL,
    PRIMARY KEY (wallet_id, day)
);

-- Admin overrides of the configured daily limits; NULL keeps the configured default.
CREATE TABLE wallet_limits (
    wallet_id               TEXT PRIMARY KEY REFERENCES wallets (id),
    daily_count             INTEGER,
    daily_amount_stroops    INTEGER,
    updated_at              TEXT NOT NULL
);
