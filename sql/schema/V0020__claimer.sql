-- pgpipe built-in schema: what the SKIP LOCKED claimer and the dead-letter
-- operations need beyond V0001/V0002. Idempotent.

-- when the first failed attempt of a row happened (copied to
-- pgpipe.dead_letters.first_failed_at when the row is dead-lettered)
ALTER TABLE staging.raw_events ADD COLUMN IF NOT EXISTS first_failed_at TIMESTAMPTZ;
COMMENT ON COLUMN staging.raw_events.first_failed_at IS
    'first failed processing attempt (claimer); cleared by a replay';

-- when the row was last claimed (also in V0001 since the migrate branch added
-- it there; this keeps databases installed before that change working)
ALTER TABLE staging.raw_events ADD COLUMN IF NOT EXISTS claimed_at TIMESTAMPTZ;

-- dead-letter listing by source and time
CREATE INDEX IF NOT EXISTS dead_letters_source_idx
    ON pgpipe.dead_letters (source_name, last_failed_at) WHERE status = 'dead';

-- Replay dead letters back to a staging table as unprocessed rows with their
-- attempts reset. Stage 'process': the original row is set back to
-- unprocessed (re-inserted from the kept payload when the row is gone, e.g.
-- its partition was dropped). Stage 'load': the raw text is inserted when it
-- is valid JSON (a {"source", "event_type", "payload"} object gives those
-- columns; any other JSON value becomes the payload with the dead letter's
-- source_name and event_type), otherwise the dead letter is refused with a
-- reason. One result row per dead letter.
CREATE OR REPLACE FUNCTION pgpipe.dlq_replay(ids bigint[],
                                             target regclass DEFAULT 'staging.raw_events')
RETURNS TABLE (dead_letter_id bigint, replayed boolean, reason text)
LANGUAGE plpgsql AS $fn$
DECLARE
    d pgpipe.dead_letters;
    j jsonb;
    n integer;
BEGIN
    FOR d IN SELECT * FROM pgpipe.dead_letters
             WHERE id = ANY (ids) AND status = 'dead' ORDER BY id FOR UPDATE
    LOOP
        dead_letter_id := d.id;
        replayed := false;
        reason := NULL;
        j := NULL;
        IF d.stage = 'process' THEN
            IF d.row_id IS NOT NULL THEN
                EXECUTE format('UPDATE %s SET processed = false, processed_at = NULL, '
                    'attempts = 0, next_attempt_at = NULL, last_error = NULL, '
                    'first_failed_at = NULL, claim_token = NULL, lease_expires_at = NULL, '
                    'claimed_by = NULL, claimed_at = NULL WHERE id = $1 AND received_at = $2', target)
                    USING d.row_id, d.row_received_at;
                GET DIAGNOSTICS n = ROW_COUNT;
                replayed := n > 0;
            END IF;
            IF NOT replayed THEN
                j := d.payload;
                IF j IS NULL THEN
                    reason := 'the staging row is gone and no payload was kept';
                END IF;
            END IF;
        ELSE
            IF d.raw_text IS NULL THEN
                reason := 'no raw text kept (the record was not valid UTF-8)';
            ELSE
                BEGIN
                    j := d.raw_text::jsonb;
                EXCEPTION WHEN others THEN
                    reason := 'raw text is not valid JSON: ' || SQLERRM;
                END;
            END IF;
        END IF;
        IF NOT replayed AND j IS NOT NULL THEN
            IF d.stage = 'load' AND jsonb_typeof(j) = 'object' AND j ? 'source'
               AND j ? 'event_type' AND j ? 'payload' THEN
                EXECUTE format('INSERT INTO %s (source, event_type, payload, batch_id) '
                               'VALUES ($1, $2, $3, $4)', target)
                    USING j ->> 'source', j ->> 'event_type', j -> 'payload', d.batch_id;
            ELSE
                EXECUTE format('INSERT INTO %s (source, event_type, payload, batch_id) '
                               'VALUES ($1, $2, $3, $4)', target)
                    USING coalesce(d.source_name, 'replay'),
                          coalesce(d.event_type, 'unknown'), j, d.batch_id;
            END IF;
            replayed := true;
        END IF;
        IF replayed THEN
            UPDATE pgpipe.dead_letters
               SET status = 'replayed', replay_count = replay_count + 1,
                   replayed_at = now(), replayed_by = current_user
             WHERE id = d.id;
        END IF;
        RETURN NEXT;
    END LOOP;
END
$fn$;
