#!/bin/sh
# `make bench-json`: pgpipe's JSON parser against cJSON, json-c, jansson and
# simdjson (DOM, parser reused) on twitter.json and citm_catalog.json from
# ../shared/data/json (skipped with a message when absent), on canada.json
# (from there, or a canada-like number-heavy file generated from a fixed seed:
# GeoJSON polygons of doubles with 15-17 significant digits) and on a ~100 MB
# NDJSON stream (amazon_cellphones.ndjson replicated, or generated with a
# fixed seed when the corpus is absent). Workloads: parse (to a document),
# validate, read-all (parse, then read every value: numbers as doubles,
# strings, keys; simdjson's DOM walked with get_double) and writing 200,000
# doubles as text (pgpipe_json_write_double against printf "%.17g" and the
# "%.15g, else %.17g" loop of cJSON and many C libraries). Figures are MB/s:
# median of 7 runs after a warm-up (min and max shown), plus callgrind
# instructions per byte (per input byte; per output byte of "%.17g" for the
# writers) where valgrind is installed. Prints the table and one
# "bench: ..." line per figure (see ../shared/BENCH.md).
set -u
top=$(cd "$(dirname "$0")/../../.." && pwd)
cd "$top"
B=build/bench
mkdir -p "$B"
data=${PGPIPE_BENCH_DATA:-$top/../shared/data}/json # PGPIPE_BENCH_DATA: another data folder
here=test/bench/json

# ---- peers (Debian packages; installed when missing, as root) --------------
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
for p in libcjson-dev libjson-c-dev libjansson-dev libsimdjson-dev g++; do
    if ! have_pkg "$p"; then
        if [ "$(id -u)" = 0 ]; then
            echo "installing $p"
            apt-get install -y "$p" >/dev/null 2>&1 || echo "could not install $p"
        else
            echo "$p is missing (run as root to install it)"
        fi
    fi
done

PGF=$(pkg-config --cflags libpq 2>/dev/null || echo "-I$(pg_config --includedir)")
PGL=$(pkg-config --libs libpq 2>/dev/null || echo -lpq)
CFLAGS="-O2 -std=c11 $PGF -I."
peers=""
gcc $CFLAGS $here/bench_json.c -o $B/bench_json -lcjson $PGL -lpthread -lm 2>$B/build_cjson.log &&
    peers="$peers cjson" || { echo "cJSON: build failed (see $B/build_cjson.log), reported as missing";
    gcc $CFLAGS -DBJ_PEER_NONE $here/bench_json.c -o $B/bench_json $PGL -lpthread -lm 2>/dev/null; }
gcc $CFLAGS -DBJ_PEER_JSONC $here/bench_json.c -o $B/bench_json_jsonc -ljson-c $PGL -lpthread -lm 2>$B/build_jsonc.log &&
    peers="$peers json-c" || echo "json-c: build failed (see $B/build_jsonc.log), reported as missing"
gcc $CFLAGS -DBJ_PEER_JANSSON $here/bench_json.c -o $B/bench_json_jansson -ljansson $PGL -lpthread -lm 2>$B/build_jansson.log &&
    peers="$peers jansson" || echo "jansson: build failed (see $B/build_jansson.log), reported as missing"
# simdjson's documentation recommends an optimised build (-O2/-O3)
g++ -O3 -std=c++17 $here/bench_simdjson.cpp -o $B/bench_simdjson -lsimdjson 2>$B/build_simdjson.log &&
    peers="$peers simdjson" || echo "simdjson: build failed (see $B/build_simdjson.log), reported as missing"

# simdjson picks its kernel from the CPU (icelake = AVX-512 where there is
# one). valgrind has no AVX-512, so under callgrind it runs another kernel:
# the instruction counts name the kernel they counted, and where the clock's
# kernel is not haswell (AVX2), haswell runs as a second contender
# (simdjson-haswell), the like-for-like figure beside the callgrind counts.
simd_native=missing; simd_cg=missing; simd_avx2=
if [ -x $B/bench_simdjson ]; then
    simd_native=$($B/bench_simdjson --impl 2>/dev/null || echo missing)
    command -v valgrind >/dev/null 2>&1 &&
        simd_cg=$(valgrind -q $B/bench_simdjson --impl 2>/dev/null || echo missing)
    if [ "$simd_native" != haswell ] &&
       [ "$(SIMDJSON_FORCE_IMPLEMENTATION=haswell $B/bench_simdjson --impl 2>/dev/null)" = haswell ]; then
        simd_avx2=haswell
    fi
    echo "simdjson kernels: $simd_native on the clock, $simd_cg under callgrind${simd_avx2:+ (haswell also on the clock)}"
fi

# ---- inputs -----------------------------------------------------------------
nd=$B/events-100mb.ndjson
if [ ! -s "$nd" ]; then
    if [ -f "$data/amazon_cellphones.ndjson" ]; then
        # ~100 MB: the real records, repeated
        n=$(( 100000000 / $(wc -c < "$data/amazon_cellphones.ndjson") + 1 ))
        i=0; : > "$nd.tmp"
        while [ $i -lt $n ]; do cat "$data/amazon_cellphones.ndjson" >> "$nd.tmp"; i=$((i + 1)); done
    else
        awk 'BEGIN { srand(42); for (i = 0; i < 400000; i++) {
            printf "{\"id\":%d,\"source\":\"web\",\"event_type\":\"e%d\",\"score\":%.4f,\"user\":{\"name\":\"user %d\",\"tags\":[\"a\",\"b\\u00e9\",%d]},\"ok\":%s,\"note\":null}\n",
                   i, int(rand() * 50), rand() * 1000, int(rand() * 100000), int(rand() * 10), rand() < 0.5 ? "true" : "false" } }' > "$nd.tmp"
    fi
    mv "$nd.tmp" "$nd"
fi

res=$B/json_results.txt
: > "$res"
run_file() { # FILE WORKLOAD [ndjson]
    nice -n 5 $B/bench_json "$@" >> "$res"
    [ -x $B/bench_json_jsonc ] && nice -n 5 $B/bench_json_jsonc "$@" >> "$res"
    [ -x $B/bench_json_jansson ] && nice -n 5 $B/bench_json_jansson "$@" >> "$res"
    [ -x $B/bench_simdjson ] && nice -n 5 $B/bench_simdjson "$@" >> "$res"
    [ -n "$simd_avx2" ] && SIMDJSON_FORCE_IMPLEMENTATION=haswell nice -n 5 $B/bench_simdjson "$@" >> "$res"
}
canada=$data/canada.json
if [ ! -f "$canada" ]; then
    canada=$B/canada.json
    [ -s "$canada" ] || $B/bench_json --gen-canada "$canada"
    echo "canada.json: $data/canada.json is absent, using a generated canada-like file ($canada)"
fi
files=""
for f in twitter.json citm_catalog.json; do
    if [ -f "$data/$f" ]; then
        files="$files $data/$f"
    else
        echo "skipping $f: $data/$f is absent"
    fi
done
files="$files $canada"
for path in $files; do
    run_file "$path" "$(basename "$path")"
done
run_file "$nd" ndjson-100MB ndjson
nice -n 5 $B/bench_json --write-doubles >> "$res"

# instructions per byte (callgrind): they do not move with the machine's load
ipb=$B/json_ipb.txt
: > "$ipb"
if command -v valgrind >/dev/null 2>&1; then
    cg() { # prints the instructions counted
        valgrind --tool=callgrind --callgrind-out-file=/dev/null "$@" 2>&1 >/dev/null |
            sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
    }
    for path in $files; do
        w=$(basename "$path")
        size=$(wc -c < "$path")
        for k in parse read-all; do
            mine=$(cg --toggle-collect=bj_cg_once $B/bench_json --once $k "$path")
            peer=missing
            if [ -x $B/bench_simdjson ]; then
                base=$(cg $B/bench_simdjson "$path" "$w" --once none)
                all=$(cg $B/bench_simdjson "$path" "$w" --once $k)
                [ -n "$base" ] && [ -n "$all" ] && peer=$((all - base))
            fi
            echo "ipb $w $k $mine $peer $size" >> "$ipb"
        done
    done
    size=$($B/bench_json --once write-17g | awk '{print $2}')
    for k in pgpipe 17g 15g-17g; do
        echo "ipbw $k $(cg --toggle-collect=bj_cg_once $B/bench_json --once write-$k) $size" >> "$ipb"
    done
else
    echo "valgrind is missing: no instructions per byte"
fi

# streaming from disk in 64 KB chunks: throughput and peak RSS
rss_line=$(nice -n 5 $B/bench_json --stream-rss "$nd")

# ---- report -----------------------------------------------------------------
echo
echo "JSON: MB/s of input, median of 7 runs (min-max); ratio = pgpipe / peer"
printf '%-10s %-28s %-22s %-10s %-22s %8s\n' component workload pgpipe peer peer_value ratio
awk -v peers="$peers" -v avx2="$simd_avx2" '
$1 == "result" { med[$2 " " $3 " " $4] = $5; rng[$2 " " $3 " " $4] = $6 "-" $7;
                 if (!($2 in seen)) { seen[$2] = 1; order[++nw] = $2 } }
function line(w, what, mine, peer, pmetric,   key, pkey, r, pv) {
    key = w " pgpipe " mine; pkey = w " " peer " " pmetric
    if (!(key in med)) return
    if (pkey in med && med[pkey] > 0) { pv = med[pkey]; r = sprintf("%.2f", med[key] / med[pkey]) }
    else { pv = "missing"; r = "missing" }
    printf "%-10s %-28s %-22s %-10s %-22s %8s\n", "json", w ":" what,
           sprintf("%.0f (%s)", med[key], rng[key]), peer,
           pv == "missing" ? pv : sprintf("%.0f (%s)", pv, rng[pkey]), r
    bench[++nb] = sprintf("bench: component=json workload=%s:%s metric=MB/s pgpipe=%.0f peer=%s peer_value=%s ratio=%s",
                          w, what, med[key], peer, pv == "missing" ? pv : sprintf("%.0f", pv), r)
}
END {
    for (i = 1; i <= nw; i++) {
        w = order[i]
        line(w, "parse", "parse", "cjson", "parse")
        line(w, "parse", "parse", "json-c", "parse")
        line(w, "parse", "parse", "jansson", "parse")
        line(w, "parse", "parse", "simdjson", "parse")
        line(w, "validate", "validate", "cjson", "parse")
        line(w, "validate", "validate", "simdjson", "parse")
        line(w, "read-all", "read-all", "simdjson", "read-all")
        if (avx2 != "") {
            line(w, "parse", "parse", "simdjson-" avx2, "parse")
            line(w, "read-all", "read-all", "simdjson-" avx2, "read-all")
        }
    }
    w = "doubles-200k"
    if ((w " pgpipe write") in med) {
        for (i = 1; i <= 2; i++) {
            peer = i == 1 ? "printf-17g" : "printf-15g-17g"
            key = w " pgpipe write"; pkey = w " " peer " write"
            r = med[pkey] > 0 ? sprintf("%.2f", med[key] / med[pkey]) : "missing"
            printf "%-10s %-28s %-22s %-10s %-22s %8s\n", "json", w ":write",
                   sprintf("%.0f (%s)", med[key], rng[key]), peer, sprintf("%.0f (%s)", med[pkey], rng[pkey]), r
            bench[++nb] = sprintf("bench: component=json workload=%s:write metric=MB/s pgpipe=%.0f peer=%s peer_value=%.0f ratio=%s",
                                  w, med[key], peer, med[pkey], r)
        }
    }
    print ""
    for (i = 1; i <= nb; i++) print bench[i]
}' "$res"
# instructions per byte (lower is better: ratio = peer / pgpipe)
awk -v cg="$simd_cg" '
$1 == "ipb" {
    mine = $4 / $6
    if ($5 == "missing") { pv = "missing"; r = "missing" }
    else { pv = sprintf("%.2f", $5 / $6); r = sprintf("%.2f", ($5 / $6) / mine) }
    printf "bench: component=json workload=%s:%s metric=instructions/byte pgpipe=%.2f peer=simdjson-%s peer_value=%s ratio=%s\n", $2, $3, mine, cg, pv, r
}
$1 == "ipbw" { ir[$2] = $3; size = $4 }
END {
    if (!("pgpipe" in ir) || size == 0) exit
    for (p in ir) if (p != "pgpipe")
        printf "bench: component=json workload=doubles-200k:write metric=instructions/byte pgpipe=%.2f peer=printf-%s peer_value=%.2f ratio=%.2f\n",
               ir["pgpipe"] / size, p, ir[p] / size, ir[p] / ir["pgpipe"]
}' "$ipb"
# stream: records bad peak_rss_MB MB/s
echo "$rss_line" | awk '{
    printf "bench: component=json workload=ndjson-100MB:stream-from-disk metric=MB/s pgpipe=%.0f peer=missing peer_value=missing ratio=missing\n", $5
    printf "bench: component=json workload=ndjson-100MB:stream-from-disk metric=peak_rss_MB pgpipe=%.1f peer=ceiling peer_value=32 ratio=%.2f\n", $4, 32 / $4
    printf "(streamed %d records, %d bad lines, peak RSS %.1f MB)\n", $2, $3, $4 }'

# ---- pp_jsonb_order: instructions per byte (callgrind) ----------------------
# bench_jsonb_order.c: the HTTP bench's event, the loader bench's payloads
# (bench_copy gen-ndjson) and twitter.json's statuses without whitespace, one
# record at a time; only the function's own work is counted.
if command -v valgrind >/dev/null 2>&1 &&
   gcc $CFLAGS $here/bench_jsonb_order.c -o $B/bench_jsonb_order $PGL -lpthread -lm 2>$B/build_jsonb_order.log &&
   gcc $CFLAGS test/bench/copy/bench_copy.c pgpipe.c -o $B/bench_copy_gen $PGL -lpthread -lm 2>>$B/build_jsonb_order.log; then
    [ -s $B/jbo-payloads.ndjson ] || $B/bench_copy_gen gen-ndjson $B/jbo-payloads.ndjson 20000
    set -- "event 20000" "payloads $B/jbo-payloads.ndjson"
    [ -f "$data/twitter.json" ] && set -- "$@" "statuses-compact $data/twitter.json 5"
    for spec in "$@"; do
        bytes=$($B/bench_jsonb_order $spec | sed -n 's/.*bytes=\([0-9]*\).*/\1/p')
        ir=$(valgrind --tool=callgrind --callgrind-out-file=/dev/null --toggle-collect=bjo_work \
             $B/bench_jsonb_order $spec 2>&1 >/dev/null | sed -n 's/.*Collected : \([0-9]*\).*/\1/p')
        [ -n "$bytes" ] && [ -n "$ir" ] && awk -v w="${spec%% *}" -v ir="$ir" -v b="$bytes" 'BEGIN {
            printf "bench: component=json workload=jsonb_order:%s metric=instructions/byte pgpipe=%.2f peer=missing peer_value=missing ratio=missing\n", w, ir / b }'
    done
else
    echo "jsonb_order: valgrind missing or build failed (see $B/build_jsonb_order.log)"
fi
