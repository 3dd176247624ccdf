-- pgpipe built-in schema: the bearer tokens of the HTTP ingest server (.serve).
-- Only the SHA-256 of a token is kept: a token is 32 random bytes, so a
-- fast hash is as good as a slow one (nothing to guess from), and the server
-- can hash each request's token without a password-hashing cost. The last
-- four characters are kept to tell tokens apart in listings. Idempotent.
CREATE TABLE IF NOT EXISTS pgpipe.http_tokens (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source       TEXT NOT NULL CHECK (source <> ''),  -- '*' = every source
    label        TEXT,
    token_sha256 TEXT NOT NULL UNIQUE CHECK (token_sha256 ~ '^[0-9a-f]{64}$'),
    hint         TEXT NOT NULL,                        -- the token's last 4 characters
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at   TIMESTAMPTZ
);
COMMENT ON TABLE pgpipe.http_tokens IS
    'bearer tokens of the HTTP ingest server: SHA-256 only (.serve token add|list|revoke)';

CREATE INDEX IF NOT EXISTS http_tokens_live_idx
    ON pgpipe.http_tokens (source) WHERE revoked_at IS NULL;
