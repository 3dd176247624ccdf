-- Production layer: typed, constrained, related.

CREATE TABLE IF NOT EXISTS production.users (
    id          BIGSERIAL PRIMARY KEY,
    public_id   UUID        NOT NULL DEFAULT gen_random_uuid() UNIQUE,
    email       TEXT        NOT NULL UNIQUE
                CONSTRAINT users_email_check
                CHECK (email ~* '^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$'),
    full_name   TEXT        NOT NULL,
    country     CHAR(2),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- with PostGIS installed, users get a location
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'postgis') THEN
        EXECUTE 'ALTER TABLE production.users ADD COLUMN IF NOT EXISTS location geography(Point, 4326)';
    END IF;
END
$$;

CREATE TABLE IF NOT EXISTS production.transactions (
    id           BIGSERIAL PRIMARY KEY,
    user_id      BIGINT         NOT NULL
                 REFERENCES production.users (id) ON DELETE CASCADE,
    amount       DECIMAL(10, 2) NOT NULL CONSTRAINT transactions_amount_check CHECK (amount > 0),
    currency     CHAR(3)        NOT NULL DEFAULT 'USD',
    status       TEXT           NOT NULL DEFAULT 'pending'
                 CONSTRAINT transactions_status_check
                 CHECK (status IN ('pending', 'completed', 'failed', 'refunded')),
    external_ref TEXT UNIQUE,   -- the source system's id: makes loading idempotent
    created_at   TIMESTAMPTZ    NOT NULL DEFAULT now(),
    updated_at   TIMESTAMPTZ    NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS transactions_user_created_idx
    ON production.transactions (user_id, created_at);
CREATE INDEX IF NOT EXISTS transactions_created_idx
    ON production.transactions (created_at);

-- updated_at follows every change
CREATE OR REPLACE FUNCTION production.set_updated_at()
RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER users_set_updated_at
    BEFORE UPDATE ON production.users
    FOR EACH ROW EXECUTE FUNCTION production.set_updated_at();
CREATE OR REPLACE TRIGGER transactions_set_updated_at
    BEFORE UPDATE ON production.transactions
    FOR EACH ROW EXECUTE FUNCTION production.set_updated_at();
