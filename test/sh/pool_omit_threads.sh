#!/bin/sh
# The pool in a single-threaded build (-DPGPIPE_OMIT_THREADS, no -lpthread):
# it compiles warning-free with gcc and clang, and at run time an acquire that
# finds no free connection fails at once with PGPIPE_BUSY instead of waiting.
set -eu
[ -n "${PGPIPE_TEST_DSN:-}" ] || { echo "no test database"; exit 77; }
top=${PGPIPE_TOP:-$(pwd)}
src=$top/pgpipe.c
[ -f "$src" ] || src=$top/pgpipe.c
tmp=${PGPIPE_TEST_TMP:-/tmp}/pool_omit_threads.$$
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
cflags=$(pkg-config --cflags libpq 2>/dev/null || echo "-I$(pg_config --includedir)")
libs=$(pkg-config --libs libpq 2>/dev/null || echo -lpq)
cat > "$tmp/t.c" <<'C'
#include "pgpipe.c"
#define CHECK(c) do { if (!(c)) { fprintf(stderr, "line %d: %s\n", __LINE__, #c); return 1; } } while (0)
int main(void)
{
    pgpipe_pool_options o;
    pgpipe_pool_options_init(&o);
    o.pool_size = 1;
    o.max_overflow = 1;
    pgpipe_pool *p;
    CHECK(pgpipe_pool_open(&p, getenv("PGPIPE_TEST_DSN"), &o) == PGPIPE_OK);
    pgpipe_conn *a, *b, *c;
    CHECK(pgpipe_pool_acquire(p, &a) == PGPIPE_OK);
    CHECK(pgpipe_pool_acquire(p, &b) == PGPIPE_OK);
    int64_t t0 = pgpipe_now_us();
    CHECK(pgpipe_pool_acquire_ex(p, &c, 5000, NULL) == PGPIPE_BUSY);
    CHECK(pgpipe_now_us() - t0 < 1000000); /* no waiting for other threads */
    CHECK(strstr(pgpipe_errmsg(p), "single-threaded") != NULL);
    const char *v[1] = { "20" };
    PGresult *r = pgpipe_conn_exec_cached(a, "SELECT $1::int + 1", 1, v, NULL, NULL, 0);
    CHECK(PQresultStatus(r) == PGRES_TUPLES_OK && strcmp(PQgetvalue(r, 0, 0), "21") == 0);
    PQclear(r);
    pgpipe_pipeline *pl;
    CHECK(pgpipe_pipeline_open(&pl, b, 0) == PGPIPE_OK);
    CHECK(pgpipe_pipeline_add(pl, "SELECT 1", 0, NULL) == PGPIPE_OK);
    int failed = -1;
    CHECK(pgpipe_pipeline_run(pl, &failed) == PGPIPE_OK && failed == 0);
    pgpipe_pipeline_close(pl);
    CHECK(pgpipe_pool_release(b) == PGPIPE_OK);
    CHECK(pgpipe_pool_acquire(p, &c) == PGPIPE_OK);
    CHECK(pgpipe_pool_release(c) == PGPIPE_OK);
    CHECK(pgpipe_pool_release(a) == PGPIPE_OK);
    pgpipe_pool_stats s;
    CHECK(pgpipe_pool_stats_get(p, &s) == PGPIPE_OK && s.in_use == 0 && s.timeouts == 1);
    int leaked = -1;
    CHECK(pgpipe_pool_close(p, &leaked) == PGPIPE_OK && leaked == 0);
    puts("single-threaded pool ok");
    return 0;
}
C
cp "$src" "$tmp/pgpipe.c"
cp "$(dirname "$src")/pgpipe.h" "$tmp/pgpipe.h"
strict="-std=c11 -Wall -Wextra -Wpedantic -Werror"
gcc $strict -DPGPIPE_OMIT_THREADS $cflags -c "$tmp/pgpipe.c" -o "$tmp/a.o"
if command -v clang >/dev/null 2>&1; then
    # -Wno-unused-function: clang also flags unused static inline helpers of
    # other components; the pool's own code has none
    clang $strict -Wno-unused-function -DPGPIPE_OMIT_THREADS $cflags -c "$tmp/pgpipe.c" -o "$tmp/b.o"
fi
gcc -std=c11 -Wall -Wextra -Werror -Wno-unused-function -DPGPIPE_OMIT_THREADS $cflags -I"$tmp" \
    "$tmp/t.c" $libs -lm -o "$tmp/t"
if nm "$tmp/t" | grep -q ' U pthread_mutex_lock'; then
    echo "single-threaded build still calls pthread_mutex_lock"; exit 1
fi
"$tmp/t"
