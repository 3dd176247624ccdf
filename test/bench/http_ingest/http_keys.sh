#!/bin/sh
# The size of pgpipe.http_keys after N idempotency keys (10M by default):
# keys are inserted with the statement shape the committers use (source,
# key, md5 hash, request id, counts), in batches of 100,000, then the
# partitions' heap + index size is printed. On a throwaway cluster:
#   sh tool/pgtmp.sh run -- sh test/bench/http_ingest/http_keys.sh
set -eu
N=${N:-10000000}
B=100000
psql -qX -v ON_ERROR_STOP=1 -c "SET client_min_messages = warning" \
    -c "SELECT pgpipe.http_keys_maintain()" >/dev/null 2>&1 || {
    echo "the schema is not installed (run bench_ingest once, or pgpipe's .schema)"; exit 1; }
psql -qX -v ON_ERROR_STOP=1 -c "TRUNCATE pgpipe.http_keys" >/dev/null
i=0
t0=$(date +%s)
while [ "$i" -lt "$N" ]; do
    psql -qX -v ON_ERROR_STOP=1 -c "INSERT INTO pgpipe.http_keys (source, key, key_hash, request_id,
        accepted, dead_lettered, errors)
      SELECT u.s, u.k, md5(u.s || E'\\n' || u.k)::uuid, gen_random_uuid(), 1, 0, NULL
      FROM (SELECT 'github' AS s, '7c9e6679-7425-40de-944b-' || lpad(to_hex(g), 12, '0') AS k
            FROM generate_series($i, $i + $B - 1) AS g) AS u" >/dev/null
    i=$((i + B))
done
t1=$(date +%s)
psql -qXAt -c "VACUUM ANALYZE pgpipe.http_keys" -c "
  SELECT 'keys=' || sum(c.reltuples)::bigint || ' partitions=' || count(*) ||
         ' total_bytes=' || sum(pg_total_relation_size(c.oid)) ||
         ' heap_bytes=' || sum(pg_relation_size(c.oid)) ||
         ' index_bytes=' || sum(pg_indexes_size(c.oid)) ||
         ' bytes_per_key=' || round(sum(pg_total_relation_size(c.oid)) / greatest(sum(c.reltuples), 1))
  FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
  WHERE i.inhparent = 'pgpipe.http_keys'::regclass"
echo "insert_seconds=$((t1 - t0))"
