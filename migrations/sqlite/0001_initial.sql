-- gateway schema, SQLite dialect. Kept column-for-column identical to ../postgres/0001_initial.sql.
-- Times are fixed-width RFC 3339 UTC text ("2025-01-31T09:15:00.123Z"): text order is time order.

-- Bearer API keys. Only the SHA-256 of a key is stored; the key itself is printed once at creation.
CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('service', 'admin')),
    key_hash    TEXT NOT NULL UNIQUE,
    created_at  TEXT NOT NULL,
    revoked_at  TEXT
);

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    external_ref  TEXT NOT NULL UNIQUE,
    blocked_at    TEXT,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);

-- One wallet per user (UNIQUE user_id). A row with public_key NULL is a reservation whose signerd
-- key is not confirmed yet; the next wallet request for the user completes it. No column holds
-- key material: key_id names the key inside signerd, public_key is its public half.
CREATE TABLE wallets (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL UNIQUE REFERENCES users (id),
    key_id      TEXT NOT NULL UNIQUE,
    public_key  TEXT UNIQUE,
    frozen_at   TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

-- Who did what, when. Append-only from the gateway's side.
CREATE TABLE audit_events (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    occurred_at   TEXT NOT NULL,
    actor         TEXT NOT NULL,
    action        TEXT NOT NULL,
    subject_type  TEXT NOT NULL,
    subject_id    TEXT NOT NULL,
    request_id    TEXT,
    details       TEXT NOT NULL
);
CREATE INDEX audit_events_subject ON audit_events (subject_type, subject_id);

-- Idempotency-Key records, per API key. response_status NULL means "in flight until
-- locked_until"; only successful responses are kept (a failed request changed nothing).
CREATE TABLE idempotency_keys (
    api_key_id       TEXT NOT NULL REFERENCES api_keys (id),
    idempotency_key  TEXT NOT NULL,
    request_hash     TEXT NOT NULL,
    locked_until     TEXT NOT NULL,
    response_status  INTEGER,
    response_body    TEXT,
    created_at       TEXT NOT NULL,
    PRIMARY KEY (api_key_id, idempotency_key)
);
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
