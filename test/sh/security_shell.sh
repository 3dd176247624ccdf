#!/bin/sh
# Security of the shell's arguments (issue 11, point 3): hostile names and
# values in .load, .dlq, .partitions, .refresh, .listen, .work, .export,
# .explain and .migrate are refused or quoted (a canary table survives), and
# no password from a connection string shows in errors, log lines, .conninfo
# or the history file.
set -u
cd "${PGPIPE_TOP:-.}"
. test/sh/lib/common.sh
[ -n "${PGPIPE_TEST_DSN:-}" ] || { echo "no PGPIPE_TEST_DSN"; exit 77; }
P=build/test/pgpipe
D=$PGPIPE_TEST_DSN
tmp=$(mktemp -d "${PGPIPE_TEST_TMP:-/tmp}/secsh.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
q() { $P -m csv "$D" "$1" | tail -n +2; }
alive() {
    [ "$(q "SELECT count(*) FROM sec_sh_canary")" = 1 ] || fail "the canary table is gone after: $1"
}
# run CMD...: the shell must not crash (exit 0 or 1, no sanitizer report)
run() {
    $P "$D" "$@" >"$tmp/out" 2>"$tmp/err"
    rc=$?
    grep -q "Sanitizer\|runtime error" "$tmp/err" && fail "sanitizer: $(cat "$tmp/err")"
    [ $rc -le 1 ] || fail "exit $rc for $*: $(cat "$tmp/out" "$tmp/err")"
    return $rc
}

$P "$D" ".install" >/dev/null 2>&1 || fail "install"
$P "$D" "DROP TABLE IF EXISTS sec_sh_canary, sec_sh_t, sec_sh_q" \
    "CREATE TABLE sec_sh_canary (alive int)" "INSERT INTO sec_sh_canary VALUES (1)" \
    "CREATE TABLE sec_sh_t (a text, b text)" \
    "CREATE TABLE sec_sh_q (LIKE staging.raw_events INCLUDING ALL)" \
    "DELETE FROM staging.raw_events WHERE source LIKE '%DROP%sec_sh_canary%'" >/dev/null || fail "setup"
printf '{"event_type":"e","k":"1"}\n' >"$tmp/r.ndjson"
mkdir -p "$tmp/mig"

# hostile words: the shell's word splitter groups with ' or " (no escapes),
# so each is written with the other quote around it
i=0
for w in "'x\"; DROP TABLE sec_sh_canary; --'" \
         "\"x'); DROP TABLE sec_sh_canary; --\"" \
         "\"x'; DROP TABLE sec_sh_canary; --\"" \
         "'\$\$; DROP TABLE sec_sh_canary; --'" \
         "'\"x\".\"y\"; DROP TABLE sec_sh_canary'" \
         "'s\303\274\"; DROP TABLE sec_sh_canary; -- \342\230\203'" \
         "\"x*/; DROP TABLE sec_sh_canary; /*\"" \
         "x;DROP;TABLE;sec_sh_canary;--"; do
    i=$((i + 1))
    case "$w" in
    \'*|\"*) qc=$(printf '%.1s' "$w"); raw=${w#?}; raw=${raw%?} ;;
    *) qc=; raw=$w ;;
    esac
    mapw="$qc$raw=k$qc"       # col=field in one word
    # refused, each with one error line: .load's table and a column of its
    # mapping are quoted (no such table/column); .dlq --since is a timestamp;
    # replay --table a regclass; .partitions takes a number of days; .refresh's
    # view and .work's table are quoted (no such relation); .migrate's
    # folder is a path (not there); .dlq's --stage and --status are one of
    # their few values
    $P "$D" ".load $tmp/r.ndjson --table $w --map a=k --key sec$i-t$$" \
        ".load $tmp/r.ndjson --table sec_sh_t --map $mapw --key sec$i-c$$" \
        ".dlq list --since $w" ".dlq replay --source $w --table $w" \
        ".partitions ahead $w" ".partitions retain $w" ".refresh $w" ".refresh $w --concurrently" \
        ".work --mark --table $w --until-empty --quiet" ".migrate $w" \
        ".dlq list --stage $w" ".dlq list --status $w" >"$tmp/out" 2>"$tmp/err"
    rc=$?
    grep -q "Sanitizer\|runtime error" "$tmp/err" && fail "sanitizer: $(cat "$tmp/err")"
    [ $rc = 1 ] || fail "exit $rc for the refused commands with $w"
    [ "$(grep -c '^error: ' "$tmp/err")" = 12 ] ||
        fail "expected 12 refusals for $w, got: $(cat "$tmp/out" "$tmp/err")"
    has "$(cat "$tmp/err")" "22007"       # .dlq --since
    has "$(cat "$tmp/err")" ".partitions ahead: DAYS: expected an integer"
    has "$(cat "$tmp/err")" ".dlq list: --stage: expected load or process"
    alive "the refused commands with $w"
    # accepted, as values: .load's source, event type, name and channel
    # (stored as they are), .dlq filters (parameters), .listen's channel
    # (quoted), .work's filters (parameters) and channel (quoted)
    $P -b "$D" ".load $tmp/r.ndjson --source $w --event-type $w --name $w --key sec$i-v$$ --channel $w" \
        ".dlq list --source $w --error $w --stage load --status any" ".dlq counts --source $w" \
        ".dlq purge --source $w" ".listen $w --timeout 0" \
        ".work --mark --table sec_sh_q --source $w --event-type $w --channel $w --until-empty --quiet" \
        "SELECT count(*) AS canary FROM sec_sh_canary" >"$tmp/out" 2>"$tmp/err" ||
        fail "hostile values $w: $(cat "$tmp/out" "$tmp/err")"
    grep -q "Sanitizer\|runtime error" "$tmp/err" && fail "sanitizer: $(cat "$tmp/err")"
    has "$(cat "$tmp/out")" "loaded 1"
    has "$(cat "$tmp/out")" "listening on"
    alive "the accepted commands with $w"
done
got=$(q "SELECT count(*) FROM staging.raw_events WHERE source LIKE '%DROP%sec_sh_canary%' AND source = event_type")
[ "$got" = "$i" ] || fail "expected $i rows loaded with hostile source = event_type, got $got"

# .export and .explain take SQL, but exactly one statement: the query cannot
# close COPY ( ... ) and add a statement of its own
run ".export \"SELECT 1 AS a) TO STDOUT; DROP TABLE sec_sh_canary; --\" $tmp/x.csv" && fail ".export ran two statements"
has "$(cat "$tmp/err")" "multiple commands"
run ".export \"SELECT 1 AS a) TO STDOUT; DROP TABLE sec_sh_canary; COPY (SELECT 1\" $tmp/x.csv" && fail ".export ran three statements"
run ".export \"SELECT 'x''); DROP TABLE sec_sh_canary; --' AS a\" $tmp/x.csv" || fail ".export: $(cat "$tmp/err")"
has "$(cat "$tmp/x.csv")" "x'); DROP TABLE sec_sh_canary; --"
run ".explain SELECT 1; DROP TABLE sec_sh_canary" && fail ".explain ran two statements"
has "$(cat "$tmp/err")" "multiple commands"
alive ".export/.explain"
echo "injection: canary alive after $i hostile words through every command"

# ---- passwords ------------------------------------------------------------
# a failing connection, in key=value and URI form and malformed
for ci in "host=127.0.0.1 port=1 user=u password=ShSecret1 connect_timeout=2" \
          "postgresql://u:ShSecret1@127.0.0.1:1/db?connect_timeout=2" \
          "postgresql://u@127.0.0.1:1/db?password=ShSecret1&connect_timeout=2" \
          "postgresql://u:ShSecret1%zz@127.0.0.1:1/db" \
          "postgresql://u:ShSecret1@[::1"; do
    PGPIPE_LOG=debug $P "$ci" "SELECT 1" >"$tmp/out" 2>&1 && fail "connected with $ci"
    grep -q ShSecret1 "$tmp/out" && fail "password in the output: $(cat "$tmp/out")"
    has "$(cat "$tmp/out")" "cannot connect"
done
# a working connection with a password (the test server trusts, so any
# password does): errors, debug log lines of .work (its pool gets the
# password) and .conninfo show none of it
DP="$D password=ShSecret2"
PGPIPE_LOG=debug $P "$DP" ".conninfo" "SELECT * FROM sec_sh_no_such_table" \
    ".work --mark --table sec_sh_no_such_table --until-empty" \
    ".work --mark --table sec_sh_q --until-empty" \
    ".load $tmp/nope.csv" >"$tmp/out" 2>&1
grep -q ShSecret2 "$tmp/out" && fail "password in the output: $(cat "$tmp/out")"
has "$(cat "$tmp/out")" "database \"postgres\" as user \"postgres\""
has "$(cat "$tmp/out")" "42P01"
uri=$(printf '%s' "$D" | sed -n 's/.*port=\([0-9]*\).*/\1/p')
host=$(printf '%s' "$D" | sed -n 's/.*host=\([^ ]*\).*/\1/p')
$P "postgresql://postgres:ShSecret3@/postgres?host=$host&port=$uri" ".conninfo" "SELECT 1/0" >"$tmp/out" 2>&1
grep -q ShSecret3 "$tmp/out" && fail "password in the output: $(cat "$tmp/out")"
has "$(cat "$tmp/out")" "22012"

# the history file of an interactive session
cc -std=c11 -Wall -Wextra -Werror test/ptydrive.c -o "$tmp/ptydrive" || fail "ptydrive"
cat > "$tmp/script" <<'S'
expect pgpipe> 
send SELECT 'postgresql://app:HistSecret1@db/x' AS u;\r
expect (1 row)
expect pgpipe> 
send SELECT 'host=db password=HistSecret2 user=x' AS k;\r
expect (1 row)
expect pgpipe> 
send DROP ROLE IF EXISTS sec_sh_role;\r
expect pgpipe> 
send CREATE ROLE sec_sh_role LOGIN PASSWORD 'HistSecret3';\r
expect pgpipe> 
send ALTER ROLE sec_sh_role\r
expect ...> 
send   WITH password 'Hist''Secret4';\r
expect pgpipe> 
send DROP ROLE sec_sh_role;\r
expect pgpipe> 
send .quit\r
exit 0
S
HOME=$tmp PGPIPE_HISTORY=$tmp/history "$tmp/ptydrive" "$tmp/script" -- $P "$D" >"$tmp/pty.out" 2>&1 ||
    fail "interactive session: $(cat "$tmp/pty.out")"
[ -s "$tmp/history" ] || fail "no history written"
grep -q "HistSecret\|Hist''Secret" "$tmp/history" && fail "a password reached the history: $(cat "$tmp/history")"
has "$(cat "$tmp/history")" "postgresql://app:********@db/x"
has "$(cat "$tmp/history")" "password=********"
has "$(cat "$tmp/history")" "PASSWORD '********'"
echo "passwords: none in errors, logs, .conninfo or the history"
$P "$D" "DROP TABLE sec_sh_canary, sec_sh_t, sec_sh_q" >/dev/null
exit 0
