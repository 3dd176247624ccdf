-- pgpipe built-in schema: CDC's memory of TOASTed values. Idempotent.

-- PostgreSQL does not send a value stored out of line (TOASTed) that an
-- update left unchanged. The CDC source keeps here, per row, the values of
-- the last staged image of the row that may be stored out of line (large
-- ones, src/cdc/cdc.c says which), written in the same transaction as the
-- events, and fills such a column of a later update from it. A row's
-- values are replaced by each new large image and forgotten when the row
-- is deleted or its table truncated.
CREATE TABLE IF NOT EXISTS pgpipe.cdc_toast (
    slot        TEXT NOT NULL REFERENCES pgpipe.cdc_slots (slot) ON DELETE CASCADE,
    table_name  TEXT NOT NULL,                -- schema.table, as in event_type
    key         TEXT NOT NULL,                -- the row's replica identity, as in "old"
    col         TEXT NOT NULL,
    value       TEXT NOT NULL,                -- the column's text, as the source sent it
    PRIMARY KEY (slot, table_name, key, col)
);
COMMENT ON TABLE pgpipe.cdc_toast IS
    'pgpipe CDC: per row, the last staged large values, to fill unchanged TOASTed columns';
