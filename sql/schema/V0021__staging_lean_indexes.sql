-- staging.raw_events keeps the indexes of the seed design only: the primary
-- key, the partial index on unprocessed rows (the claimer's), BRIN on
-- received_at and the expression index on a payload key. The index on
-- batch_id (V0001) is dropped: nothing in pgpipe looks rows up by batch (the
-- loader's bookkeeping is pgpipe.load_batches), and every claimed row is an
-- UPDATE that has to insert a new entry into each b-tree, so it cost about a
-- tenth of the claim. Create it again if you query staging by batch:
--   CREATE INDEX raw_events_batch_idx ON staging.raw_events (batch_id);
DROP INDEX IF EXISTS staging.raw_events_batch_idx;
