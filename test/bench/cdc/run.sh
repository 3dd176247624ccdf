#!/bin/sh
# make bench-cdc: the CDC source (`.cdc start`, src/cdc) against the two
# ways people read a PostgreSQL database's changes today, on the same
# source and target clusters (two throwaway clusters on this machine: the
# source with wal_level = logical, the target where staging is):
#   pgpipe          .cdc start: pgoutput, each source transaction staged in
#                   staging.raw_events in one target transaction with its LSN
#   subscription    PostgreSQL's own logical replication: CREATE SUBSCRIPTION
#                   into a copy of the table on the target (the apply worker)
#   pg_recvlogical  pg_recvlogical with wal2json, writing to /dev/null:
#                   decoding and sending alone, a ceiling for any client
# The workload: CDC_BENCH_ROWS (1,000,000) row changes on the source, 60%
# inserts, 30% updates, 10% deletes, in transactions of 1,000 rows.
#
# Catch-up throughput (the headline): each round makes one slot per
# contender, runs the workload once (every slot keeps its WAL), then lets
# each contender read its slot to the workload's last commit, one after the
# other in an order that rotates round by round (CDC_BENCH_ROUNDS, 3). A
# contender's time is from its start to the last change applied (pgpipe:
# pgpipe.cdc_slots.applied_lsn past the last commit; subscription: the last
# transaction's effect visible on the target; pg_recvlogical: --endpos);
# changes/s = rows / that time. Medians of the rounds, min and max beside.
# Correctness: pgpipe staged exactly the rows changed, each once.
#
# Lag while streaming: one more workload per contender with the contender
# already streaming; the lag is the time from the workload's last commit to
# the last change applied.
#
# Memory: one transaction of CDC_BENCH_BIG_MB (2048) MB of rows (1 kB
# each), streamed by pgpipe while in progress; its peak RSS (VmHWM) and the
# rows staged, which must be every row of it. CDC_BENCH_BIG_MB=0 skips it.
# It needs about 6 times its size of free disk (source table and WAL,
# pgpipe's spool file, staging and its WAL).
#
# A/B: CDC_BENCH_OLD=PATH (another build's pgpipe, e.g. main's) adds the
# contender "pgpipe_old", in every round beside this one. For both pgpipe
# contenders the round also records the CPU they cost (utime + stime from
# /proc, in ms: pgpipe's process, its target backends and its walsender on
# the source, found by application_name) and how often each of pgpipe's
# threads was found blocked (not running: /proc/PID/task/*/stat sampled
# every 50 ms); the table reports CPU per change, the machine's load
# average beside it. Wall-clock figures on a shared machine are noise;
# CPU per change and the interleaved A/B ratio are less so.
#   CDC_BENCH_OLD=/path/to/main/build/pgpipe CDC_BENCH_ROWS=200000 \
#     CDC_BENCH_BIG_MB=0 CDC_BENCH_PARTS=rounds make bench-cdc
#
# The bench fails (exit 1, "cdc bench: FAIL" lines) when pgpipe did not
# stage each change exactly once, in any round or in the big transaction.
#   sh test/bench/cdc/run.sh
#   CDC_BENCH_PARTS=big sh test/bench/cdc/run.sh     the big transaction alone
# CDC_BENCH_ARGS / CDC_BENCH_OLD_ARGS: more options of .cdc start for this
# build / the old one, e.g. one build against itself, one writer against two:
#   CDC_BENCH_OLD=build/pgpipe CDC_BENCH_OLD_ARGS="--writers 2" CDC_BENCH_ROWS=200000 \
#     CDC_BENCH_BIG_MB=0 CDC_BENCH_PARTS=rounds make bench-cdc
# Environment: CDC_BENCH_ROWS, CDC_BENCH_ROUNDS, CDC_BENCH_BIG_MB,
# CDC_BENCH_PARTS (any of "rounds lag big"; all three),
# PGTMP_DURABLE (1: fsync and synchronous_commit on, both clusters),
# SKIP_DEPS=1 (do not run tool/deps.sh --bench-cdc).
set -eu
top=$(cd "$(dirname "$0")/../../.." && pwd)
cd "$top"
out=build/bench/cdc
mkdir -p "$out"

if [ "${1:-}" != "--inner" ]; then
    # the peer's plugin (Debian's postgresql-NN-wal2json); missing, it is
    # reported below and that contender is left out
    [ "${SKIP_DEPS:-0}" = 1 ] || sh tool/deps.sh --bench-cdc --quiet || true
    make -s build/pgpipe
    export PGTMP_DURABLE=${PGTMP_DURABLE:-1}
    exec nice -n 5 sh tool/pgtmp.sh run -- sh "$0" --inner
fi

# ---- inside the target cluster ------------------------------------------------
N=${CDC_BENCH_ROWS:-1000000}
R=${CDC_BENCH_ROUNDS:-3}
BIG=${CDC_BENCH_BIG_MB:-2048}
PARTS=${CDC_BENCH_PARTS:-rounds lag big}
part() { case " $PARTS " in *" $1 "*) return 0 ;; esac; return 1; }
part big || BIG=0
P=$top/build/pgpipe
PO=${CDC_BENCH_OLD:-}
[ -z "$PO" ] || [ -x "$PO" ] || { echo "cdc bench: CDC_BENCH_OLD=$PO is not an executable"; exit 1; }
T=$PGPIPE_TEST_DSN
res=$out/results.txt
srcdir=$top/$out/src
pid=""
cleanup() {
    [ -z "$pid" ] || { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }
    sh tool/pgtmp.sh stop "$srcdir" >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 1' INT TERM
rm -rf "$srcdir"
S=$(sh tool/pgtmp.sh start "$srcdir" --logical --owner $$)
qs() { psql "$S" -qAtX -v ON_ERROR_STOP=1 -c "$1"; }
qt() { psql "$T" -qAtX -v ON_ERROR_STOP=1 -c "$1"; }
now_ms() { date +%s%3N; }
pgbin=$(dirname "$(readlink -f "$(sh tool/pgtmp.sh bindir)/postgres")")
pglib=$("$pgbin/pg_config" --pkglibdir 2>/dev/null || echo "${pgbin%/bin}/lib")
recv=0
if [ -f "$pglib/wal2json.so" ] && [ -x "$pgbin/pg_recvlogical" ]; then recv=1; fi
[ $recv = 1 ] || echo "cdc bench: wal2json is not installed (sh tool/deps.sh --bench-cdc): pg_recvlogical is left out"

# a server may refuse output plugins not named in its
# output_plugin_libraries (a setting some builds add, a list of plugin
# names): the throwaway source gets wal2json added to it; when it still
# refuses, pg_recvlogical is left out
if [ $recv = 1 ]; then
    opl=$(qs "SELECT setting FROM pg_settings WHERE name = 'output_plugin_libraries'" 2>/dev/null || true)
    case ",$(echo "$opl" | tr -d ' ')," in
    ,,|*,wal2json,*) ;;
    *) items=$(echo "$opl" | tr -d ' ' | sed 's/,/, /g')
       qs "ALTER SYSTEM SET output_plugin_libraries = $items, wal2json" >/dev/null &&
           qs "SELECT pg_reload_conf()" >/dev/null && sleep 1 ;;
    esac
fi
if [ $recv = 1 ] && ! qs "SELECT pg_drop_replication_slot(slot_name) FROM pg_create_logical_replication_slot('rl_probe', 'wal2json')" >/dev/null 2>&1; then
    recv=0; echo "cdc bench: the source refuses wal2json as an output plugin (output_plugin_libraries): pg_recvlogical is left out"
fi

ins=$((N * 6 / 10 / 1000 * 1000)); upd=$((N * 3 / 10 / 1000 * 1000)); del=$((N - ins - upd))
del=$((del / 1000 * 1000)); N=$((ins + upd + del))

# the source: the table, its publication, the workload as a procedure (a
# commit every 1,000 rows); bench_mark gets the WAL position just before
# the last commit: a contender is done when it applied past it
qs "CREATE TABLE bench_t (id int PRIMARY KEY, v text, n int);
    CREATE TABLE bench_big (id int PRIMARY KEY, v text);
    CREATE TABLE bench_mark (lsn pg_lsn PRIMARY KEY);
    CREATE PUBLICATION bench_pub FOR TABLE bench_t, bench_big;
    CREATE PROCEDURE bench_work(base int, ins int, upd int, del int) LANGUAGE plpgsql AS \$\$
    BEGIN
        FOR b IN 0 .. ins / 1000 - 1 LOOP
            INSERT INTO bench_t SELECT base + g, md5(g::text), g
            FROM generate_series(b * 1000 + 1, b * 1000 + 1000) g;
            COMMIT;
        END LOOP;
        FOR b IN 0 .. upd / 1000 - 1 LOOP
            UPDATE bench_t SET n = n + 1, v = 'u' WHERE id > base + b * 1000 AND id <= base + b * 1000 + 1000;
            COMMIT;
        END LOOP;
        FOR b IN 0 .. del / 1000 - 1 LOOP
            DELETE FROM bench_t WHERE id > base + b * 1000 AND id <= base + b * 1000 + 1000;
            IF b = del / 1000 - 1 THEN
                DELETE FROM bench_mark;
                INSERT INTO bench_mark SELECT pg_current_wal_insert_lsn();
            END IF;
            COMMIT;
        END LOOP;
    END \$\$" >/dev/null
# the target: pgpipe's schema and the subscription's copy of the table
"$P" "$T" .install >/dev/null 2>&1
qt "CREATE TABLE bench_t (id int PRIMARY KEY, v text, n int); CREATE TABLE bench_big (id int PRIMARY KEY, v text)" >/dev/null

work() { # base: the workload, returns when its last commit is done
    qs "CALL bench_work($1, $ins, $upd, $del)" >/dev/null
}
mark() { qs "SELECT lsn FROM bench_mark"; }
slot() { qs "SELECT pg_create_logical_replication_slot('$1', '$2')" >/dev/null; }

# pgpipe: .cdc start in the background (binary $2, this build's by
# default); done when its applied LSN passed M. Its connections carry the
# application_name ppb_SLOT (PGAPPNAME), so its backends can be found.
pp_start() { PGAPPNAME=ppb_$1 "${2:-$P}" "$T" ".cdc start --source '$S' --slot $1 --publication bench_pub --no-create --heartbeat 0 ${3:-}" \
    >"$out/pp.log" 2>&1 & pid=$!
    sampler "$pid" "$out/threads.$1" & spid=$!
    wsampler "$1" "$out/waits.$1" & wpid=$!; }
# every 50 ms, the state of pgpipe's target backends (one psql session,
# \watch): idle (waiting for pgpipe), CPU (active, no wait event) or the
# wait event (IO:WALWrite, LWLock:WALWrite, Lock:extend, ...)
wsampler() {
    printf "SELECT CASE WHEN state <> 'active' THEN 'idle' ELSE coalesce(wait_event_type, 'CPU') || ':' || coalesce(wait_event, '-') END FROM pg_stat_activity WHERE application_name = 'ppb_%s' \\\\watch 0.05\n" "$1" > "$out/watch.$1.sql"
    exec psql "$T" -qAtX -f "$out/watch.$1.sql" > "$2" 2>/dev/null
}
# CPU ticks (utime + stime) of processes; the backends of application_name ppb_SLOT
ticks() { for p in "$@"; do [ ! -r "/proc/$p/stat" ] || { read -r l < "/proc/$p/stat" || true; set -- ${l##*) }; echo $(( ${12:-0} + ${13:-0} )); }; done | awk '{ s += $1 } END { print s + 0 }'; }
backends() { psql "$1" -qAtX -c "SELECT pid FROM pg_stat_activity WHERE application_name = 'ppb_$2' AND pid <> pg_backend_pid()"; }
hz=$(getconf CLK_TCK 2>/dev/null || echo 100)
ms_of() { awk -v t="$1" -v hz="$hz" 'BEGIN { printf "%d", t * 1000 / hz }'; }
# every 50 ms, each thread of pid: "tid state" (R running, else blocked)
sampler() {
    while [ -d "/proc/$1" ]; do
        for d in /proc/$1/task/*; do
            read -r l < "$d/stat" 2>/dev/null || continue
            st=${l##*) }; st=${st%% *}; w=-
            [ "$st" = R ] || read -r w < "$d/wchan" 2>/dev/null || true
            echo "${l%% *} $st ${w:--}"
        done
        sleep 0.05
    done > "$2" 2>/dev/null
}
# one pgpipe contender of round r: name, slot, binary
pp_round() {
    a=$(now_ms); pp_start "$2" "$3" "$4"; wait_until pp_done "$2" "$m"; b=$(now_ms)
    cp=$(ticks "$pid"); ct=$(ticks $(backends "$T" "$2")); cw=$(ticks $(backends "$S" "$2"))
    pp_stop; kill "$spid" "$wpid" 2>/dev/null || true; wait "$spid" "$wpid" 2>/dev/null || true
    # per thread: the share of samples blocked, and where (the kernel's wchan:
    # a futex is pgpipe's queue, poll the stream, a socket wait the target)
    blk=$(awk '{ n[$1]++; if ($2 != "R") { b[$1]++; w[$1 " " $3]++ } }
        END { for (t in n) { printf "%s:%d%%", t, 100 * b[t] / n[t]
                             for (k in w) { split(k, a, " "); if (a[1] == t && w[k] * 20 >= n[t]) printf ",%s=%d%%", a[2], 100 * w[k] / n[t] }
                             printf "\n" } }' "$out/threads.$2" | sort -n | tr '\n' ' ')
    got=$(qt "SELECT count(*) FROM staging.raw_events WHERE source = '$2'")
    dup=$(qt "SELECT count(*) FROM (SELECT payload->>'lsn', payload->'row'->>'id', payload->'old'->>'id', event_type FROM staging.raw_events WHERE source = '$2' GROUP BY 1, 2, 3, 4 HAVING count(*) > 1) d")
    echo "$1 $r $((b - a)) $got $dup $(ms_of "$cp") $(ms_of "$ct") $(ms_of "$cw") $(cut -d' ' -f1 /proc/loadavg)" >> "$res"
    echo "$1 $r threads $blk" >> "$out/blocked.txt"
    # the target backends' samples (all of pgpipe's connections: the writers' and the idle TOAST lookup's)
    wt=$(grep -v '^$' "$out/waits.$2" | sort | uniq -c | sort -rn | awk '{ n[NR] = $1; k[NR] = $2; t += $1 } END { for (i = 1; i <= NR && i <= 8; i++) printf "%s=%d%% ", k[i], 100 * n[i] / t; printf "(%d samples)", t }')
    echo "$1 $r target $wt" >> "$out/waits.txt"
}
pp_done() { [ "$(qt "SELECT coalesce(bool_or(applied_lsn >= '$2'), false) FROM pgpipe.cdc_slots WHERE slot = '$1'")" = t ]; }
pp_stop() { kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; pid=""; }
spid=; wpid=
# subscription: done when the last deleted row is gone and the last inserted one is there
sub_make() { qt "CREATE SUBSCRIPTION $1 CONNECTION '$S' PUBLICATION bench_pub WITH (create_slot = false,
    slot_name = '$1', copy_data = false, enabled = false)" >/dev/null 2>&1; }
sub_up() { [ "$(qt "SELECT count(*) FROM pg_stat_subscription WHERE subname = '$1' AND pid IS NOT NULL")" -ge 1 ]; }
sub_done() { [ "$(qt "SELECT NOT EXISTS (SELECT 1 FROM bench_t WHERE id = $2 + $del) AND EXISTS (SELECT 1 FROM bench_t WHERE id = $2 + $ins)")" = t ]; }
drop_slot() { # the slot, once its reader let go of it (at most 10 s)
    n=100
    while [ $n -gt 0 ]; do
        qs "SELECT pg_drop_replication_slot('$1')" >/dev/null 2>&1 && return 0
        sleep 0.1; n=$((n - 1))
    done
    qs "SELECT pg_drop_replication_slot('$1')" >/dev/null
}
sub_drop() {
    qt "ALTER SUBSCRIPTION $1 DISABLE" >/dev/null
    qt "ALTER SUBSCRIPTION $1 SET (slot_name = NONE)" >/dev/null
    qt "DROP SUBSCRIPTION $1" >/dev/null
    drop_slot "$1"
}
wait_until() { # FN ARGS...: poll every 20 ms, at most 600 s
    n=30000
    while [ $n -gt 0 ]; do "$@" && return 0; sleep 0.02; n=$((n - 1)); done
    echo "cdc bench: gave up waiting ($*)"; return 1
}

# ---- catch-up rounds -----------------------------------------------------------
: > "$res"
: > "$out/blocked.txt"
: > "$out/waits.txt"
part rounds || R=0
[ "$R" = 0 ] || echo "cdc bench: $N changes per round ($ins inserts, $upd updates, $del deletes, 1,000 per transaction), $R rounds; PGTMP_DURABLE=$PGTMP_DURABLE; $(nproc) cores"
r=1
while [ $r -le "$R" ]; do
    base=$((r * 10000000))
    slot "pp_$r" pgoutput; slot "sub_$r" pgoutput; sub_make "sub_$r"
    [ -z "$PO" ] || slot "ppo_$r" pgoutput
    [ $recv = 0 ] || slot "rl_$r" wal2json
    t0=$(now_ms); work $base; t1=$(now_ms)
    m=$(mark)
    echo "  round $r: workload $((t1 - t0)) ms on the source"
    case $((r % 3)) in 1) order="pgpipe subscription pg_recvlogical pgpipe_old" ;;
                       2) order="pgpipe_old subscription pg_recvlogical pgpipe" ;;
                       *) order="pg_recvlogical pgpipe pgpipe_old subscription" ;; esac
    for c in $order; do
        case $c in
        pgpipe)
            pp_round pgpipe "pp_$r" "$P" "${CDC_BENCH_ARGS:-}" ;;
        pgpipe_old)
            [ -n "$PO" ] || continue
            pp_round pgpipe_old "ppo_$r" "$PO" "${CDC_BENCH_OLD_ARGS:-}"; drop_slot "ppo_$r" ;;
        subscription)
            # timed from its apply worker's start: the launcher may take seconds
            # to start one, which is not the apply's speed
            qt "ALTER SUBSCRIPTION sub_$r ENABLE" >/dev/null; wait_until sub_up "sub_$r"
            a=$(now_ms); wait_until sub_done "sub_$r" $base; b=$(now_ms)
            sub_drop "sub_$r"
            echo "subscription $r $((b - a))" >> "$res" ;;
        pg_recvlogical)
            [ $recv = 1 ] || continue
            a=$(now_ms)
            "$pgbin/pg_recvlogical" -d "$S" --slot "rl_$r" --start --endpos "$m" -f /dev/null --no-loop
            b=$(now_ms)
            drop_slot "rl_$r"
            echo "pg_recvlogical $r $((b - a))" >> "$res" ;;
        esac
        echo "    $c: $((b - a)) ms"
    done
    drop_slot "pp_$r"
    r=$((r + 1))
done

# ---- lag while streaming -------------------------------------------------------
if part lag; then
base=$(((R + 1) * 10000000))
slot pp_lag pgoutput
pp_start pp_lag "$P" "${CDC_BENCH_ARGS:-}"
wait_until sh -c "[ \"\$(psql '$S' -qAtX -c \"SELECT active FROM pg_replication_slots WHERE slot_name = 'pp_lag'\")\" = t ]"
w0=$(now_ms); work $base; w1=$(now_ms); m=$(mark)
wait_until pp_done pp_lag "$m"; d=$(now_ms); pp_stop
echo "lag pgpipe $((d - w1)) $((d - w0))" >> "$res"
drop_slot pp_lag
base=$((base + 10000000))
slot sub_lag pgoutput; sub_make sub_lag; qt "ALTER SUBSCRIPTION sub_lag ENABLE" >/dev/null
wait_until sh -c "[ \"\$(psql '$S' -qAtX -c \"SELECT active FROM pg_replication_slots WHERE slot_name = 'sub_lag'\")\" = t ]"
w0=$(now_ms); work $base; w1=$(now_ms)
wait_until sub_done sub_lag $base; d=$(now_ms); sub_drop sub_lag
echo "lag subscription $((d - w1)) $((d - w0))" >> "$res"
if [ $recv = 1 ]; then
    base=$((base + 10000000))
    slot rl_lag wal2json
    "$pgbin/pg_recvlogical" -d "$S" --slot rl_lag --start -f /dev/null --no-loop -s 1 -F 0 2>/dev/null & pid=$!
    w0=$(now_ms); work $base; w1=$(now_ms); m=$(mark)
    # done: the slot's confirmed position (pg_recvlogical's flush feedback, every 1 s) passed the mark
    wait_until sh -c "[ \"\$(psql '$S' -qAtX -c \"SELECT confirmed_flush_lsn >= '$m' FROM pg_replication_slots WHERE slot_name = 'rl_lag'\")\" = t ]"
    d=$(now_ms); kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; pid=""
    drop_slot rl_lag
    echo "lag pg_recvlogical $((d - w1)) $((d - w0))" >> "$res"
fi
fi

# ---- one big transaction: pgpipe's memory ------------------------------------
if [ "$BIG" -gt 0 ]; then
    rows=$((BIG * 1024))
    echo "cdc bench: one $BIG MB transaction ($rows rows of 1 kB); $(df -h "$top/$out" | awk 'NR == 2 { print $4 }') of disk free"
    slot pp_big pgoutput
    # one transaction (psql -c runs the three as one); the mark before its commit
    qs "INSERT INTO bench_big SELECT g, repeat(md5(g::text), 31) FROM generate_series(1, $rows) g;
        DELETE FROM bench_mark; INSERT INTO bench_mark SELECT pg_current_wal_insert_lsn()" >/dev/null
    m=$(mark)
    a=$(now_ms); pp_start pp_big "$P" "${CDC_BENCH_ARGS:-}"
    hwm=0
    while ! pp_done pp_big "$m"; do
        h=$(sed -n 's/^VmHWM:[^0-9]*\([0-9]*\) kB/\1/p' "/proc/$pid/status" 2>/dev/null || echo 0)
        [ -z "$h" ] || [ "$h" -le "$hwm" ] || hwm=$h
        kill -0 "$pid" 2>/dev/null || { echo "cdc bench: pgpipe stopped on the big transaction:"; tail -5 "$out/pp.log"; break; }
        sleep 0.2
    done
    b=$(now_ms)
    h=$(sed -n 's/^VmHWM:[^0-9]*\([0-9]*\) kB/\1/p' "/proc/$pid/status" 2>/dev/null || echo 0)
    [ -z "$h" ] || [ "$h" -le "$hwm" ] || hwm=$h
    pp_stop
    got=$(qt "SELECT count(*) FROM staging.raw_events WHERE source = 'pp_big'")
    dup=$(qt "SELECT count(*) - count(DISTINCT payload->'row'->>'id') FROM staging.raw_events WHERE source = 'pp_big'")
    echo "big $BIG $rows $got $((b - a)) $hwm $dup" >> "$res"
    drop_slot pp_big
fi

# ---- the table -------------------------------------------------------------------
med() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print ""; else print v[int((NR + 1) / 2)] }'; }
col() { awk -v c="$1" -v k="$2" '$1 == c { print $k }' "$res"; }
rate() { awk -v n="$N" -v ms="$1" 'BEGIN { if (ms > 0) printf "%.0f", n * 1000 / ms; else print 0 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
line() { # contender: median ms, min, max, changes/s
    ms=$(col "$1" 3 | med); lo=$(col "$1" 3 | sort -n | head -1); hi=$(col "$1" 3 | sort -n | tail -1)
    [ -n "$ms" ] || { echo "| cdc | $N changes, catch-up | $1 | (not run) | | |"; return; }
    echo "| cdc | $N changes, catch-up | $1 | $(rate "$ms") | $ms ($lo, $hi) | $(awk -v c="$1" '$1 == "lag" && $2 == c { print $3 }' "$res") |"
}
fail=0
if [ "$R" -gt 0 ]; then
echo
echo "| component | workload | contender | changes/s (median) | catch-up ms (min, max) | lag after the last commit, streaming, ms |"
echo "|---|---|---|---|---|---|"
line pgpipe; [ -z "$PO" ] || line pgpipe_old; line subscription; line pg_recvlogical
echo
echo "CPU per change (µs: ms of CPU * 1000 / changes, medians of the rounds; load average at the end of each catch-up):"
for k in pgpipe pgpipe_old; do
    [ -n "$(col $k 6)" ] || continue
    echo "  $k: pgpipe $(col $k 6 | med | awk -v n=$N '{ printf "%.2f", $1 * 1000 / n }'), target backend $(col $k 7 | med | awk -v n=$N '{ printf "%.2f", $1 * 1000 / n }'), walsender $(col $k 8 | med | awk -v n=$N '{ printf "%.2f", $1 * 1000 / n }'); load $(col $k 9 | tr '\n' ' ')"
done
echo "pgpipe's threads, share of samples found blocked (tid:%,where=%; the first is the reader):"
sed 's/^/  /' "$out/blocked.txt"
echo "pgpipe's target backends, share of samples (pg_stat_activity every 50 ms; idle = waiting for pgpipe, CPU = running):"
sed 's/^/  /' "$out/waits.txt"
pp_ms=$(col pgpipe 3 | med); sub_ms=$(col subscription 3 | med); rl_ms=$(col pg_recvlogical 3 | med)
pp_rate=$(rate "$pp_ms"); sub_rate=$(rate "$sub_ms"); rl_rate=$(rate "${rl_ms:-0}")
bad=$(awk -v n="$N" '($1 == "pgpipe" || $1 == "pgpipe_old") && ($4 != n || $5 != 0) { c++ } END { print c + 0 }' "$res")
echo
echo "pgpipe staged: $(col pgpipe 4 | tr '\n' ' ')of $N per round; duplicate changes: $(col pgpipe 5 | tr '\n' ' ')"
if [ "$bad" != 0 ]; then
    echo "cdc bench: FAIL: pgpipe did NOT stage each change exactly once in $bad of $R rounds (staged: $(col pgpipe 4 | tr '\n' ' ')of $N; duplicates: $(col pgpipe 5 | tr '\n' ' '))" >&2
    fail=1
fi
echo
wl="${N}-mixed"
echo "bench: component=cdc workload=$wl metric=changes/s pgpipe=$pp_rate peer=subscription peer_value=$sub_rate ratio=$(ratio "$pp_rate" "$sub_rate")"
[ $recv = 0 ] || echo "bench: component=cdc workload=$wl metric=changes/s pgpipe=$pp_rate peer=pg_recvlogical peer_value=$rl_rate ratio=$(ratio "$pp_rate" "$rl_rate")"
echo "bench: component=cdc workload=$wl metric=changes/s pgpipe=$pp_rate peer=target peer_value=40000 ratio=$(ratio "$pp_rate" 40000)"
if [ -n "$PO" ]; then
    po_rate=$(rate "$(col pgpipe_old 3 | med)")
    echo "bench: component=cdc workload=$wl metric=changes/s pgpipe=$pp_rate peer=pgpipe_old peer_value=$po_rate ratio=$(ratio "$pp_rate" "$po_rate")"
    # per round, interleaved: this build's time against the old one's
    echo "A/B per round (old ms / new ms): $(awk '$1 == "pgpipe" { n[$2] = $3 } $1 == "pgpipe_old" { o[$2] = $3 } END { for (r in n) if (o[r]) printf "%s:%.2f ", r, o[r] / n[r] }' "$res")"
fi
lp=$(awk '$1 == "lag" && $2 == "pgpipe" { print $3 }' "$res"); ls_=$(awk '$1 == "lag" && $2 == "subscription" { print $3 }' "$res")
[ -z "$lp" ] || echo "bench: component=cdc workload=$wl metric=lag_ms pgpipe=$lp peer=subscription peer_value=$ls_ ratio=$(ratio "$ls_" "$lp")"
fi
if [ "$BIG" -gt 0 ]; then
    awk '$1 == "big" { printf "one %d MB transaction (%d rows): %d staged in %d ms, pgpipe peak RSS %.1f MB\n", $2, $3, $4, $5, $6 / 1024 }' "$res"
    awk -v mb="$BIG" '$1 == "big" { printf "bench: component=cdc workload=txn-%dMB metric=peak_rss_mb pgpipe=%.1f staged=%d rows=%d\n", mb, $6 / 1024, $4, $3 }' "$res"
    if ! awk '$1 == "big" && $3 == $4 && $7 == 0 { ok = 1 } END { exit !ok }' "$res"; then
        echo "cdc bench: FAIL: the $BIG MB transaction was not staged exactly once: $(awk '$1 == "big" { printf "%d of %d rows staged, %d twice", $4, $3, $7 }' "$res")" >&2
        fail=1
    fi
fi
[ "$fail" = 0 ]
