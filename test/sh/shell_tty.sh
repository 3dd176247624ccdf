#!/bin/sh
# The interactive shell as a person uses it, on a pseudo-terminal: prompt,
# multi-line SQL, line editing, history (up arrow, saved without passwords),
# Ctrl-C, .quit.
set -u
cd "${PGPIPE_TOP:-.}"
tmp=$(mktemp -d "${PGPIPE_TEST_TMP:-/tmp}/tty.XXXXXX")
cc -std=c11 -Wall -Wextra -Werror test/ptydrive.c -o "$tmp/ptydrive" || exit 1
cat > "$tmp/script" <<'S'
expect Type .help for help
expect pgpipe> 
send SELECT 40 +\r
expect ...> 
send 2 AS answer;\r
expect answer
expect  42
expect (1 row)
expect pgpipe> 
send SELEC oops;\r
expect [42601]
expect pgpipe> 
send .mode csv\r
expect pgpipe> 
send SELECT 'ac' AS e;
# move left 8 keys (arrow keys), then insert: 'ac' becomes 'abc'
send \e[D\e[D\e[D\e[D\e[D\e[D\e[D\e[D
send b\r
expect e\r\nabc\r\n
expect pgpipe> 
# up arrow brings the statement back; Enter runs it again
send \e[A\r
expect e\r\nabc\r\n
expect pgpipe> 
send SELECT 'password=hunter2' AS p;\r
expect p\r\npassword=hunter2\r\n
expect pgpipe> 
# Ctrl-C at the prompt drops the line
send some text that is dropped\x03
expect ^C
expect pgpipe> 
# Ctrl-C while a statement runs cancels the statement, not the shell
send SELECT pg_sleep(60);\r
until build/test/pgpipe -m csv "$PGPIPE_TEST_DSN" "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE 'SELECT pg_sleep(60)%'" | tail -n 1 | grep -qx 1
send \x03
expect [57014]
expect pgpipe> 
send SELECT 'still here' AS s;\r
expect still here
expect pgpipe> 
S
# .load on a terminal: a progress bar with rows/s and ETA, then a summary table
awk 'BEGIN { for (i = 1; i <= 3000; i++) print (i == 7 ? "{oops" : "{\"n\":" i "}") }' > "$tmp/t.ndjson"
cat >> "$tmp/script" <<S
send .load $tmp/t.ndjson --event-type tty --batch-rows 100 --channel ''\\r
expect rows/s, ETA
expect dead-lettered  batches
expect 3000         2999              1       30
expect pgpipe> 
send .quit\\r
exit 0
S
HOME=$tmp PGPIPE_HISTORY=$tmp/history "$tmp/ptydrive" "$tmp/script" -- build/test/pgpipe "$PGPIPE_TEST_DSN" || exit 1
grep -qF "SELECT 40 + 2 AS answer;" "$tmp/history" || { echo "history lacks the statement:"; cat "$tmp/history"; exit 1; }
grep -q hunter2 "$tmp/history" && { echo "a password reached the history"; exit 1; }
grep -qF "password=********" "$tmp/history" || { echo "masked line missing"; cat "$tmp/history"; exit 1; }
echo "interactive shell ok"
