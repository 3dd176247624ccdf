#!/bin/sh
# .pull in the shell against test/pull_server.py: progress on stderr, the
# records in staging, a secret refused as a value and masked in an error,
# and kill -9 of the shell in the middle of a run: the next .pull resumes
# after the last committed page, every record staged exactly once.
set -u
cd "${PGPIPE_TOP:-.}"
. test/sh/lib/common.sh
P=build/test/pgpipe
D=${PGPIPE_TEST_DSN:-}
[ -n "$D" ] || { echo "no PGPIPE_TEST_DSN"; exit 77; }
need_pgpipe
command -v python3 >/dev/null 2>&1 || { echo "python3 missing (sh tool/deps.sh --test)"; exit 77; }
tmp=$(mktemp -d "${PGPIPE_TEST_TMP:-/tmp}/pullsh.XXXXXX")
chmod 755 "$tmp"
spid=""; cpid=""
cleanup() {
    [ -z "$cpid" ] || { kill -9 "$cpid" 2>/dev/null; wait "$cpid" 2>/dev/null; }
    [ -z "$spid" ] || { kill -9 "$spid" 2>/dev/null; wait "$spid" 2>/dev/null; }
    rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; for f in "$tmp"/*.err; do [ -f "$f" ] && { echo "--- $f"; tail -n 20 "$f"; }; done; exit 1; }
q() { $P -m csv "$D" "$1" | tail -n 1; }

python3 test/pull_server.py --port-file "$tmp/port" 2>"$tmp/server.err" &
spid=$!
i=0
while [ ! -s "$tmp/port" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
[ -s "$tmp/port" ] || fail "the test server did not start"
base=http://127.0.0.1:$(cat "$tmp/port")
$P "$D" "DELETE FROM staging.raw_events WHERE source LIKE 'plsh%'" \
    "DELETE FROM pgpipe.pull_state WHERE source LIKE 'plsh%'" \
    "DELETE FROM pgpipe.dead_letters WHERE source_name LIKE 'plsh%'" >/dev/null 2>&1

# a run with progress; the records and the state
err=$($P "$D" ".pull '$base/cursor?n=250&per=50' --source plsh --stream items --paginate cursor \
      --records data.items --cursor-path next_cursor --more-path has_more --event-type-field type" 2>&1) ||
    fail ".pull: $err"
case "$err" in *"built without libcurl"*) echo "the shell is built without libcurl"; exit 77 ;; esac
has "$err" "pull: 5 pages, 250 records, 0 dead-lettered"
[ "$(q "SELECT count(DISTINCT payload->>'id') FROM staging.raw_events WHERE source = 'plsh'")" = 250 ] ||
    fail "250 records"
[ "$(q "SELECT cursor FROM pgpipe.pull_state WHERE source = 'plsh'")" = 250 ] || fail "the cursor"

# secrets: never a value; masked in errors
err=$($P "$D" ".pull '$base/link?n=5' --source plsh2 --token abc" 2>&1) && fail "--token accepted"
has "$err" "unknown option"
export PLSH_TOKEN=very-secret-value
err=$($P "$D" ".pull '$base/link?n=5&auth=bearer&echo=very-secret-value&api_key=k' --source plsh2 \
      --token-env PLSH_TOKEN" 2>&1) && fail "a wrong token accepted"
has "$err" "HTTP 401"
has "$err" "echo=***&api_key=***"
case "$err" in *very-secret-value*) fail "the secret is in the error: $err" ;; esac

# --concurrency: a whole number from 1 to 64
for v in 0 -1 abc 65 99999999999999999999 2.5; do
    err=$($P "$D" ".pull '$base/link?n=5' --source plsh2 --concurrency $v" 2>&1) && fail "--concurrency $v accepted"
    has "$err" "--concurrency: requests in flight at once, a whole number from 1 to 64, not \"$v\""
done

# --max-body and --body-budget: sizes; a page over the limit fails naming it;
# the next run resumes at that page (the URL the first run stored): with room
# it goes, and a bad record is dead-lettered, the page's others staged
for v in 0 -1 abc 12X 2T; do
    err=$($P "$D" ".pull '$base/link?n=5' --source plsh2 --max-body $v" 2>&1) && fail "--max-body $v accepted"
    has "$err" "--max-body: bytes, or with k, M or G (512k, 64M), from 1 byte to 1024G, not \"$v\""
done
err=$($P "$D" ".pull '$base/link?n=5' --source plsh2 --max-body 2M --body-budget 1M" 2>&1) &&
    fail "a budget below the largest body accepted"
has "$err" "the budget must hold the largest body"
err=$($P "$D" ".pull '$base/link?n=30&per=10&padrec=15:40000&badrec=22:utf8' --source plsh3 --paginate link --max-body 32k \
      --body-budget 64k" 2>&1) && fail "a page over --max-body accepted"
has "$err" "page=2"
has "$err" "the response body is over the limit of 32 kB (--max-body;"
[ "$(q "SELECT count(*) FROM staging.raw_events WHERE source = 'plsh3'")" = 10 ] || fail "page 1 only"
err=$($P "$D" ".pull '$base/link?n=30&per=10&padrec=15:40000&badrec=22:utf8' --source plsh3 --paginate link \
      --max-body 64k --concurrency 3" 2>&1) || fail ".pull with room: $err"
has "$err" "pull: 2 pages, 19 records, 1 dead-lettered"
[ "$(q "SELECT count(DISTINCT payload->>'id') FROM staging.raw_events WHERE source = 'plsh3'")" = 29 ] ||
    fail "29 records staged"
[ "$(q "SELECT line_number FROM pgpipe.dead_letters WHERE source_name = 'plsh3'")" = 2 ] ||
    fail "record 22 dead-lettered as record 2 of its page"
$P "$D" "DELETE FROM staging.raw_events WHERE source = 'plsh3'" "DELETE FROM pgpipe.pull_state WHERE source = 'plsh3'" \
    "DELETE FROM pgpipe.pull_runs WHERE source = 'plsh3'" \
    "DELETE FROM pgpipe.dead_letters WHERE source_name = 'plsh3'" >/dev/null 2>&1

# kill -9 in the middle of a run, then resume (one request at a time, then 4)
for c in 1 4; do
    src=plsh3_$c
    $P "$D" ".pull '$base/offset?n=600&delay=30' --source $src --paginate offset --limit 10 --records items \
        --concurrency $c" 2>"$tmp/k.err" &
    cpid=$!
    i=0
    while [ "$(q "SELECT coalesce(max(pages), 0) FROM pgpipe.pull_state WHERE source = '$src'")" -lt 5 ] &&
          [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
    kill -9 "$cpid"; wait "$cpid" 2>/dev/null; cpid=""
    n=$(q "SELECT count(*) FROM staging.raw_events WHERE source = '$src'")
    [ "$n" -gt 0 ] && [ "$n" -lt 600 ] || fail "concurrency $c: killed after $n records"
    $P "$D" ".pull '$base/offset?n=600&delay=30' --source $src --paginate offset --limit 10 --records items \
        --concurrency $c" 2>"$tmp/k2.err" || fail "concurrency $c: the resumed .pull"
    got=$(q "SELECT count(*) || ' ' || count(DISTINCT payload->>'id') FROM staging.raw_events WHERE source = '$src'")
    [ "$got" = "600 600" ] || fail "concurrency $c: not exactly once: $got"
    echo "ok: kill -9 with concurrency $c after $n records, resumed"
done
echo "ok: .pull, secrets, --concurrency, kill -9 resume"
