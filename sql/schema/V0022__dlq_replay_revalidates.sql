-- pgpipe built-in schema: a replay validates a dead letter of stage 'load'
-- again, the way its load did, and keeps its load's source.
--
-- Since this version the loader records its field mapping and its required
-- fields in pgpipe.loads.options -> 'mapping':
--   {"columns": [{"column": "source", "value": "web"},
--                {"column": "event_type", "field": "event_type"},
--                {"column": "payload", "field": "$record", "json": true}, ...],
--    "required": ["event_type", ...]}
-- A replay of a dead letter of such a load checks its raw text as the loader
-- does (valid JSON, an object, every required field present and not null),
-- maps it with the same columns (the source is the load's --source, or its
-- source name; never the file path unless that was the source), and inserts
-- it. One that still fails stays dead-lettered with attempt_count + 1,
-- last_failed_at = now() and the new error ("replay: ..."), and is returned
-- with replayed = false and the reason. A CSV record is not replayed on its
-- own (the header that names its fields is not kept). Dead letters of loads
-- that recorded no mapping (older pgpipe versions) are replayed as before:
-- valid JSON, with the dead letter's source name.

-- A field of a record by the loader's names: "name", or a path "a.b",
-- "items[0]".
CREATE OR REPLACE FUNCTION pgpipe.dlq_field(j jsonb, field text) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $fn$
    SELECT CASE WHEN field ~ '[.\[]'
                THEN j #> string_to_array(regexp_replace(field, '\[([0-9]+)\]', '.\1', 'g'), '.')
                ELSE j -> field END
$fn$;

CREATE OR REPLACE FUNCTION pgpipe.dlq_replay(ids bigint[],
                                             target regclass DEFAULT 'staging.raw_events')
RETURNS TABLE (dead_letter_id bigint, replayed boolean, reason text)
LANGUAGE plpgsql AS $fn$
DECLARE
    d pgpipe.dead_letters;
    ld pgpipe.loads;
    j jsonb;
    m jsonb;
    col jsonb;
    v jsonb;
    rec jsonb;
    f text;
    cols text;
    state text;
    n integer;
BEGIN
    FOR d IN SELECT * FROM pgpipe.dead_letters
             WHERE id = ANY (ids) AND status = 'dead' ORDER BY id FOR UPDATE
    LOOP
        dead_letter_id := d.id;
        replayed := false;
        reason := NULL;
        state := NULL;
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
                IF d.payload IS NULL THEN
                    reason := 'the staging row is gone and no payload was kept';
                ELSE
                    BEGIN
                        EXECUTE format('INSERT INTO %s (source, event_type, payload, batch_id) '
                                       'VALUES ($1, $2, $3, $4)', target)
                            USING coalesce(d.source_name, 'replay'),
                                  coalesce(d.event_type, 'unknown'), d.payload, d.batch_id;
                        replayed := true;
                    EXCEPTION WHEN others THEN
                        reason := SQLERRM;
                        state := SQLSTATE;
                    END;
                END IF;
            END IF;
        ELSE
            ld := NULL;
            IF d.load_id IS NOT NULL THEN
                SELECT * INTO ld FROM pgpipe.loads WHERE id = d.load_id;
            END IF;
            m := ld.options -> 'mapping';
            IF d.raw_text IS NULL THEN
                reason := 'no raw text kept (the record was not valid UTF-8)';
            ELSIF ld.format = 'csv' THEN
                reason := 'a CSV record is not replayed on its own (its header is not kept): '
                          'load the fixed file again';
            ELSE
                BEGIN
                    j := d.raw_text::jsonb;
                EXCEPTION WHEN others THEN
                    reason := 'raw text is not valid JSON: ' || SQLERRM;
                    state := SQLSTATE;
                END;
            END IF;
            IF reason IS NULL AND m IS NOT NULL THEN
                -- the checks and the mapping of the load
                IF jsonb_typeof(j) <> 'object' THEN
                    reason := format('record is a JSON %s, not an object', jsonb_typeof(j));
                END IF;
                IF reason IS NULL THEN
                    FOR f IN SELECT jsonb_array_elements_text(m -> 'required') LOOP
                        v := pgpipe.dlq_field(j, f);
                        IF v IS NULL OR jsonb_typeof(v) = 'null' THEN
                            reason := format('required field "%s" is %s', f,
                                             CASE WHEN v IS NULL THEN 'missing' ELSE 'null' END);
                            EXIT;
                        END IF;
                    END LOOP;
                END IF;
                IF reason IS NULL THEN
                    rec := '{}';
                    cols := '';
                    FOR col IN SELECT jsonb_array_elements(m -> 'columns') LOOP
                        f := col ->> 'field';
                        v := CASE
                            WHEN col ? 'value' THEN col -> 'value'
                            WHEN f = '$record' THEN CASE WHEN coalesce((col ->> 'json')::boolean, false)
                                                         THEN j ELSE to_jsonb(d.raw_text) END
                            WHEN f = '$source' THEN to_jsonb(coalesce(ld.source, d.source_name))
                            WHEN f = '$line' THEN to_jsonb(d.line_number)
                            WHEN f = '$batch_id' THEN to_jsonb(d.batch_id)
                            WHEN f = '$load_id' THEN to_jsonb(d.load_id)
                            WHEN f IS NULL THEN 'null'::jsonb
                            ELSE pgpipe.dlq_field(j, f) END;
                        rec := rec || jsonb_build_object(col ->> 'column', coalesce(v, 'null'::jsonb));
                        cols := cols || CASE WHEN cols = '' THEN '' ELSE ', ' END
                                     || quote_ident(col ->> 'column');
                    END LOOP;
                    BEGIN
                        EXECUTE format('INSERT INTO %s (%s) SELECT %s FROM jsonb_populate_record(NULL::%s, $1)',
                                       target, cols, cols, target) USING rec;
                        replayed := true;
                    EXCEPTION WHEN others THEN
                        reason := SQLERRM;
                        state := SQLSTATE;
                    END;
                END IF;
            ELSIF reason IS NULL THEN
                -- a load that recorded no mapping: as before this version
                BEGIN
                    IF jsonb_typeof(j) = 'object' AND j ? 'source' AND j ? 'event_type' AND j ? 'payload' THEN
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
                EXCEPTION WHEN others THEN
                    reason := SQLERRM;
                    state := SQLSTATE;
                END;
            END IF;
        END IF;
        IF replayed THEN
            UPDATE pgpipe.dead_letters
               SET status = 'replayed', replay_count = replay_count + 1,
                   replayed_at = now(), replayed_by = current_user
             WHERE id = d.id;
        ELSE
            -- still bad: it stays dead, with this attempt counted
            UPDATE pgpipe.dead_letters
               SET attempt_count = attempt_count + 1, last_failed_at = now(),
                   error_message = 'replay: ' || reason, sqlstate = coalesce(state, sqlstate)
             WHERE id = d.id;
        END IF;
        RETURN NEXT;
    END LOOP;
END
$fn$;
