-- Idempotent moves from staging to production (repeatable: re-applied when
-- this file changes). Running them twice changes nothing the second time.

-- Insert or update one user by email; returns its id.
CREATE OR REPLACE FUNCTION production.upsert_user(p_email text, p_full_name text,
                                                  p_country text DEFAULT NULL)
RETURNS bigint
LANGUAGE sql AS $$
    INSERT INTO production.users AS u (email, full_name, country)
    VALUES (lower(p_email), p_full_name, p_country)
    ON CONFLICT (email) DO UPDATE
        SET full_name = EXCLUDED.full_name,
            country   = COALESCE(EXCLUDED.country, u.country)
    RETURNING id;
$$;

-- staging.raw_users {"email": ..., "name": ..., "country": ...} -> production.users.
-- The newest record per email wins. Returns the number of users written.
CREATE OR REPLACE FUNCTION staging.promote_users()
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    WITH picked AS (
        SELECT DISTINCT ON (lower(payload ->> 'email'))
               id, lower(payload ->> 'email') AS email, payload ->> 'name' AS full_name,
               payload ->> 'country' AS country
        FROM staging.raw_users
        WHERE NOT processed AND payload ? 'email' AND payload ? 'name'
        ORDER BY lower(payload ->> 'email'), received_at DESC, id DESC
    ), written AS (
        INSERT INTO production.users AS u (email, full_name, country)
        SELECT email, full_name, country FROM picked
        ON CONFLICT (email) DO UPDATE
            SET full_name = EXCLUDED.full_name,
                country   = COALESCE(EXCLUDED.country, u.country)
            WHERE (u.full_name, u.country) IS DISTINCT FROM
                  (EXCLUDED.full_name, COALESCE(EXCLUDED.country, u.country))
        RETURNING 1
    )
    SELECT count(*) INTO n FROM written;
    UPDATE staging.raw_users SET processed = true WHERE NOT processed;
    RETURN n;
END
$$;

-- A payload's amount fits production.transactions.amount (DECIMAL(10,2) > 0).
CREATE OR REPLACE FUNCTION staging.valid_amount(p jsonb)
RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN jsonb_typeof(p -> 'amount') = 'number'
                THEN (p ->> 'amount')::numeric > 0 AND (p ->> 'amount')::numeric < 100000000
                ELSE false END;
$$;

-- staging.raw_events of type 'transaction' {"email", "amount", "status", "ref"}
-- -> production.transactions, keyed by the source's ref: a record seen again
-- updates the status instead of adding a row.
CREATE OR REPLACE FUNCTION staging.promote_transactions()
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    WITH picked AS (
        SELECT DISTINCT ON (e.payload ->> 'ref')
               e.payload ->> 'ref' AS ref, u.id AS user_id,
               (e.payload ->> 'amount')::numeric(10, 2) AS amount,
               COALESCE(e.payload ->> 'status', 'pending') AS status,
               e.received_at
        FROM staging.raw_events e
        JOIN production.users u ON u.email = lower(e.payload ->> 'email')
        WHERE NOT e.processed AND e.event_type = 'transaction'
          AND e.payload ? 'ref'
          AND staging.valid_amount(e.payload)
        ORDER BY e.payload ->> 'ref', e.received_at DESC, e.id DESC
    ), written AS (
        INSERT INTO production.transactions AS t (external_ref, user_id, amount, status, created_at)
        SELECT ref, user_id, amount, status, received_at FROM picked
        ON CONFLICT (external_ref) DO UPDATE
            SET status = EXCLUDED.status, amount = EXCLUDED.amount
            WHERE (t.status, t.amount) IS DISTINCT FROM (EXCLUDED.status, EXCLUDED.amount)
        RETURNING 1
    )
    SELECT count(*) INTO n FROM written;
    -- records that could not be moved stay unprocessed, for a look
    UPDATE staging.raw_events e SET processed = true, processed_at = now()
    WHERE NOT e.processed AND e.event_type = 'transaction' AND e.payload ? 'ref'
      AND staging.valid_amount(e.payload)
      AND EXISTS (SELECT 1 FROM production.users u WHERE u.email = lower(e.payload ->> 'email'));
    RETURN n;
END
$$;
