-- The index on the payload key user_id (V0001) holds only the rows that have
-- the key. A b-tree indexes NULLs too, so every row without the key (change
-- events from CDC, most webhooks) paid an index insertion at COPY, and again
-- at every non-HOT UPDATE of its claim, for an entry no lookup can use: it was
-- about a fifth of the target's time staging CDC events. A lookup
--   WHERE payload ->> 'user_id' = '...'
-- still uses the index: the planner proves the predicate from the strict =.
-- Rebuilding it reads the table once and blocks writes to staging meanwhile
-- (a partitioned index cannot be built CONCURRENTLY); on a large staging
-- table, run this migration in a quiet moment.
DROP INDEX IF EXISTS staging.raw_events_user_id_idx;
CREATE INDEX IF NOT EXISTS raw_events_user_id_idx
    ON staging.raw_events ((payload ->> 'user_id'))
    WHERE (payload ->> 'user_id') IS NOT NULL;
