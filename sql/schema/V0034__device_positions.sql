-- Store-and-forward: the position of each device's spool at staging.
--
-- Every spooled record carries its device's id and a sequence number that
-- grows by one per record for the life of a spool folder (a new folder has
-- a new spool id and starts at 1 again). last_seq is the highest sequence of
-- (device, spool) committed to staging, moved in the same transaction as
-- the records (the HTTP source, Pgpipe-Device / Pgpipe-Seq; the server's own
-- spool drainer) or right after a segment's load (the loader's drainer,
-- whose load key covers the gap). A record at or below it is a duplicate and
-- adds nothing: a high-water mark is a per-record key without a row per
-- record, as long as a device's records arrive in order.
CREATE TABLE IF NOT EXISTS pgpipe.device_positions (
    device     TEXT        NOT NULL,
    spool      TEXT        NOT NULL DEFAULT '',   -- the spool folder's id ('' = not named)
    last_seq   BIGINT      NOT NULL CHECK (last_seq >= 0),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (device, spool)
);
