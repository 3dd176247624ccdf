#!/bin/sh
# The terminal after Ctrl-C and with psql's backslash commands (issue 18
# §3.2, §3.4): after a cancelled statement .read runs every statement of a
# file; \x, \timing, \conninfo, \d, an unknown \foo and \q are one-line
# commands (never the continuation prompt); Ctrl-C at ...> clears the buffer.
set -u
cd "${PGPIPE_TOP:-.}"
tmp=$(mktemp -d "${PGPIPE_TEST_TMP:-/tmp}/ttyk.XXXXXX")
cc -std=c11 -Wall -Wextra -Werror test/ptydrive.c -o "$tmp/ptydrive" || exit 1
printf "SELECT 'first' AS r1;\nSELECT 'second' AS r2;\nSELECT 'third' AS r3;\n" > "$tmp/three.sql"
cat > "$tmp/script" <<S
expect pgpipe> 
send SELECT pg_sleep(60);\\r
until build/test/pgpipe -m csv "\$PGPIPE_TEST_DSN" "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE 'SELECT pg_sleep(60)%'" | tail -n 1 | grep -qx 1
send \\x03
expect [57014]
expect pgpipe> 
send .read $tmp/three.sql\\r
expect first
expect second
expect third
expect pgpipe> 
# and again: the flag stays reset
send .read $tmp/three.sql\\r
expect first
expect second
expect third
expect pgpipe> 
send \\\\x\\r
expect Expanded display is on
expect pgpipe> 
send SELECT 1 AS a, 2 AS b;\\r
expect a | 1
expect b | 2
expect pgpipe> 
send \\\\x off\\r
expect Expanded display is off
expect pgpipe> 
send \\\\timing on\\r
expect Timing is on.
expect pgpipe> 
send \\\\conninfo\\r
expect connected to database
expect pgpipe> 
send \\\\dn\\r
expect List of schemas
expect pgpipe> 
send \\\\foo\\r
expect invalid command \\\\foo (try .help)
expect pgpipe> 
# Ctrl-C at the continuation prompt drops what was typed so far
send SELECT 'dropped' AS x\\r
expect ...> 
send \\x03
expect ^C
expect pgpipe> 
send SELECT 'fresh' AS y;\\r
expect fresh
expect (1 row)
expect pgpipe> 
send \\\\q\\r
exit 0
S
HOME=$tmp PGPIPE_HISTORY=$tmp/history "$tmp/ptydrive" "$tmp/script" -- build/test/pgpipe "$PGPIPE_TEST_DSN" || exit 1
echo "terminal keys ok"
