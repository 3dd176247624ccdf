-- pgpipe built-in schema: CDC's memory of TOASTed values. Idempotent.

-- PostgreSQL does not send a value stored out of line (TOASTed) that an
-- update left unchanged. The CDC source keeps here, per row and column,
-- the last staged value that may be stored out of line (a large one,
-- src/cdc/cdc.c says which), written in the same transaction as the
-- events, and fills such a column of a later update from it. A column
-- written small again, a deleted row and a truncated table are forgotten.
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
