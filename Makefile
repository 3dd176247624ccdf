# pgpipe - see README.md.  Everything built goes under build/.
#
#   make                  regenerate the amalgamation if a source changed, build
#                         build/libpgpipe.a, build/libpgpipe.so.X.Y.Z, the shell
#                         build/pgpipe and its man page build/pgpipe.1
#   make test [T=GROUP]   (first: what the tests need, tool/deps.sh --test)
#                         ASan+UBSan build, unit + database tests on a throwaway
#                         cluster, amalgamation checks; ends with "N passed, N failed"
#                         (make test and make demo build with JOBS=$(nproc) jobs)
#   make test-tsan        ThreadSanitizer build of the threaded tests (TSAN_GROUPS)
#   make amalgamation     write pgpipe.c and pgpipe.h from src/ and sql/
#   make check-amalgamation  fail when pgpipe.c/pgpipe.h differ from the sources
#   make deps             check (and on Debian as root, install) what the build and
#                         the tests need (make demo and make test do it first:
#                         tool/deps.sh; SKIP_DEPS=1 skips that)
#   make install PREFIX=/usr/local   header, static and shared library, shell,
#                         man page, pgpipe.pc
#   make man              the man page build/pgpipe.1 from --help and .help
#   make fresh-check      make demo and make test in a fresh Debian root, as root
#                         and as a user (downloads packages; tool/fresh-check.sh)
#   make cross            compile pgpipe.c for aarch64 at -Os in each PGPIPE_OMIT_*
#                         configuration, print the size table; ends with the
#                         parse+spool+load size line (bench: component=size ...)
#   make cross-test       the unit tests that need no server (the spool's among
#                         them) for aarch64 under qemu-aarch64, then the aarch64
#                         shell loads and spools + drains over TCP into a
#                         throwaway server (test/sh/cross_qemu.sh; also in make test)
#   make cross-arm32      compile pgpipe.c for 32-bit ARM (arm-linux-gnueabihf)
#   make bench | bench-NAME      benchmarks (test/bench/NAME/run.sh)
#   make fuzz-NAME SECONDS=60    libFuzzer target test/fuzz/fuzz_NAME.c
#   make demo             (first: tool/deps.sh --demo) the main job on a private
#                         local server
#   make chaos            faults, restarts and SIGKILLs under load, checked record
#                         by record (CHAOS_SEED, CHAOS_SECONDS=120, CHAOS_RECORDS;
#                         CHAOS_FAULTS=net,restart,kill,dup,pgbouncer,failover:
#                         the fault kinds, default all that are installed)
#   make load-test        10M events through the loader and 4 workers, RSS sampled
#   make valgrind         the demo at a small size with every shell run under memcheck

CC       ?= cc
CLANG    ?= clang
PREFIX   ?= /usr/local
SECONDS  ?= 60
T        ?=
# builds that make test and make demo start themselves run this many jobs
JOBS     ?= $(shell nproc 2>/dev/null || echo 2)

# libpq's flags: pkg-config, else pg_config, else nothing (never a bare -I)
PG_CFLAGS := $(shell pkg-config --cflags libpq 2>/dev/null || { d=$$(pg_config --includedir 2>/dev/null) && [ -n "$$d" ] && echo "-I$$d"; } || true)
PG_LIBS   := $(shell pkg-config --libs libpq 2>/dev/null || echo -lpq)
STRICT    := -std=c11 -Wall -Wextra -Wpedantic -Werror
CFLAGS    ?= -O2 -g
LIBS      := $(PG_LIBS) -lpthread -lm
# the API pull's HTTP client is optional: libcurl when installed (pkg-config,
# else curl-config). The library (libpgpipe.a/.so) stays libpq-only; the
# shell and the tests are built with it.
CURL_LIBS := $(shell pkg-config --libs libcurl 2>/dev/null || curl-config --libs 2>/dev/null)
ifneq ($(strip $(CURL_LIBS)),)
PULL_CFLAGS := -DPGPIPE_ENABLE_CURL $(shell pkg-config --cflags libcurl 2>/dev/null || curl-config --cflags 2>/dev/null)
PULL_LIBS   := $(CURL_LIBS)
PULL_SAY    := pull source: libcurl $(shell pkg-config --modversion libcurl 2>/dev/null || curl-config --version 2>/dev/null | sed 's/^libcurl //')
SHELL_LIB    = $(B)/pgpipe-curl.o
else
PULL_CFLAGS :=
PULL_LIBS   :=
PULL_SAY    := pull source: off (install libcurl4-openssl-dev)
SHELL_LIB    = $(B)/libpgpipe.a
endif
SAN       := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

SRC_FILES := $(wildcard src/pgpipe.h src/*/*.c src/*/*.h) tool/amalgamate.sh
SQL_FILES := $(shell find sql -type f -name '*.sql' 2>/dev/null | LC_ALL=C sort)
TEST_FILES := $(sort $(wildcard test/test_*.c))
B := build
# the library version from pgpipe.h (X.Y.Z); the shared library's soname is libpgpipe.so.X
VERSION   := $(shell sed -n 's/^\#define PGPIPE_VERSION *"\(.*\)"/\1/p' pgpipe.h 2>/dev/null)
MAJOR     := $(firstword $(subst ., ,$(VERSION)))
SONAME    := libpgpipe.so.$(MAJOR)

.PHONY: all amalgamation check-amalgamation test test-run test-build test-tsan test-numbers deps install cross cross-test cross-arm32 \
        bench demo demo-run clean lib shell chaos load-test valgrind man fresh-check

all: pgpipe.c pgpipe.h $(B)/libpgpipe.a $(B)/libpgpipe.so.$(VERSION) $(B)/pgpipe $(B)/pgpipe.1

# ---- amalgamation ------------------------------------------------------------
# one run makes both (a grouped target: never two runs side by side under -j)
pgpipe.c pgpipe.h &: $(SRC_FILES) $(SQL_FILES)
	sh tool/amalgamate.sh . .

amalgamation:
	sh tool/amalgamate.sh . .

# There is one amalgamation: pgpipe.c/pgpipe.h at the top, which every build
# and test uses and make regenerates when a source is newer. This check
# generates a copy aside and compares, without touching them (CI runs it first
# on a clean clone, so it sees the committed files).
check-amalgamation:
	@rm -rf $(B)/check && mkdir -p $(B)/check && sh tool/amalgamate.sh . $(B)/check
	@cmp -s $(B)/check/pgpipe.c pgpipe.c && cmp -s $(B)/check/pgpipe.h pgpipe.h || \
	  { echo "pgpipe.c/pgpipe.h differ from what src/ and sql/ generate: run 'make amalgamation' and commit"; exit 1; }
	@echo "amalgamation matches its sources"

# ---- library and shell -------------------------------------------------------
# one position-independent object for both libraries
$(B)/pgpipe.o: pgpipe.c pgpipe.h
	@mkdir -p $(B)
	$(CC) $(STRICT) $(CFLAGS) -fPIC $(PG_CFLAGS) -c pgpipe.c -o $@

$(B)/libpgpipe.a: $(B)/pgpipe.o
	rm -f $@ && ar rcs $@ $<

# the shared library exports the pgpipe_* functions and nothing else
$(B)/libpgpipe.map:
	@mkdir -p $(B)
	printf '{\n  global: pgpipe_*;\n  local: *;\n};\n' > $@

$(B)/libpgpipe.so.$(VERSION): $(B)/pgpipe.o $(B)/libpgpipe.map
	$(CC) $(CFLAGS) -shared -Wl,-soname,$(SONAME) -Wl,--version-script=$(B)/libpgpipe.map \
	  $(B)/pgpipe.o $(LIBS) -o $@
	ln -sf libpgpipe.so.$(VERSION) $(B)/$(SONAME)
	ln -sf $(SONAME) $(B)/libpgpipe.so

# the shell's own copy of the library, with the pull's HTTP client
$(B)/pgpipe-curl.o: pgpipe.c pgpipe.h
	@mkdir -p $(B)
	$(CC) $(STRICT) $(CFLAGS) $(PG_CFLAGS) $(PULL_CFLAGS) -c pgpipe.c -o $@

$(B)/pgpipe: shell.c pgpipe.h $(SHELL_LIB)
	@echo "$(PULL_SAY)"
	$(CC) $(STRICT) $(CFLAGS) $(PG_CFLAGS) $(PULL_CFLAGS) -I. shell.c $(SHELL_LIB) $(LIBS) $(PULL_LIBS) -o $@

lib: $(B)/libpgpipe.a $(B)/libpgpipe.so.$(VERSION)
shell: $(B)/pgpipe

# the man page pgpipe(1), written from the shell's --help and .help text
$(B)/pgpipe.1: $(B)/pgpipe tool/manpage.sh
	sh tool/manpage.sh $(B)/pgpipe > $@.tmp && mv $@.tmp $@
man: $(B)/pgpipe.1

# ---- tests -------------------------------------------------------------------
$(B)/test/all_tests.c: $(TEST_FILES) test/gen_registry.sh
	@mkdir -p $(B)/test
	sh test/gen_registry.sh $(TEST_FILES) > $@

# system calls the tests can make fail (test/test_spool.c: __wrap_fdatasync, __wrap_ftruncate)
TEST_WRAP = -Wl,--wrap=fdatasync -Wl,--wrap=ftruncate

$(B)/test/runner: $(B)/test/all_tests.c pgpipe.c test/pgtest.h test/runner.c $(TEST_FILES)
	@echo "$(PULL_SAY)"
	$(CC) $(STRICT) -Wno-unused-function -O1 -g $(SAN) $(PG_CFLAGS) $(PULL_CFLAGS) -I. -Itest \
	  $(B)/test/all_tests.c $(TEST_WRAP) $(LIBS) $(PULL_LIBS) -o $@

# the shell, built against the same sanitized amalgamation, for shell tests
$(B)/test/pgpipe: shell.c pgpipe.c
	$(CC) $(STRICT) -O1 -g $(SAN) $(PG_CFLAGS) $(PULL_CFLAGS) -I. shell.c pgpipe.c $(LIBS) $(PULL_LIBS) -o $@

test-build: $(B)/test/runner $(B)/test/pgpipe

# make test and make demo first check what they need (tool/deps.sh: installs it
# as root, else names the one command to run), then build in a new make, so
# that the flags from pkg-config are read after an install; the build runs
# JOBS compiles side by side (the library, the shell, the test runner)
test:
	@[ "$(SKIP_DEPS)" = 1 ] || sh tool/deps.sh --test --quiet
	@$(MAKE) --no-print-directory -j$(JOBS) test-build
	@$(MAKE) --no-print-directory test-run

test-run: test-build
	@sh test/run.sh $(T)

# The JSON number tests at full size: 10M random inputs of each kind, built
# optimised without sanitizers, counting the exact fallback (test/test_jsonnum.c).
$(B)/numbers/runner: test/test_jsonnum.c pgpipe.c test/pgtest.h test/runner.c test/gen_registry.sh
	@mkdir -p $(B)/numbers
	sh test/gen_registry.sh test/test_jsonnum.c > $(B)/numbers/numbers_tests.c
	$(CC) $(STRICT) -Wno-unused-function -O2 -DPGPIPE_JSON_NUM_STATS $(PG_CFLAGS) $(PULL_CFLAGS) \
	  -I. -Itest $(B)/numbers/numbers_tests.c $(LIBS) $(PULL_LIBS) -o $@

test-numbers: $(B)/numbers/runner
	@PGPIPE_NUM_COUNT=$${PGPIPE_NUM_COUNT:-10000000} PGPIPE_NUM_SECONDS=3000 PGT_TIMEOUT=3600 \
	  $(B)/numbers/runner 'json.jsonnum*'

# ThreadSanitizer build of the same tests, run on the threaded groups
# (TSAN_GROUPS) against its own throwaway cluster.
TSAN_GROUPS ?= pool claim copy pooler http http_ingest run_sched run_source run_alert cdc
$(B)/tsan/runner: $(B)/test/all_tests.c pgpipe.c test/pgtest.h test/runner.c $(TEST_FILES)
	@mkdir -p $(B)/tsan
	$(CC) $(STRICT) -Wno-unused-function -O1 -g -fsanitize=thread -fno-omit-frame-pointer \
	  $(PG_CFLAGS) -I. -Itest $(B)/test/all_tests.c $(TEST_WRAP) $(LIBS) -o $@

test-tsan: $(B)/tsan/runner
	@t=$$(mktemp -d /tmp/pgpipe-tsan.XXXXXX) && chmod 1777 "$$t" && \
	  TSAN_OPTIONS="$${TSAN_OPTIONS:-halt_on_error=1 exitcode=66}" PGPIPE_TOP=$(CURDIR) \
	  PGPIPE_TEST_TMP="$$t" sh tool/pgtmp.sh run -- $(B)/tsan/runner $(TSAN_GROUPS); \
	  rc=$$?; for i in 1 2 3 4 5; do rm -rf "$$t" 2>/dev/null && break; sleep 1; done; exit $$rc

# ---- tools -------------------------------------------------------------------
deps:
	sh tool/deps.sh

fresh-check:
	sh tool/fresh-check.sh

I := $(DESTDIR)$(PREFIX)
install: $(B)/libpgpipe.a $(B)/libpgpipe.so.$(VERSION) $(B)/pgpipe $(B)/pgpipe.1
	mkdir -p $(I)/include $(I)/lib/pkgconfig $(I)/bin $(I)/share/man/man1
	cp pgpipe.h $(I)/include/pgpipe.h
	cp $(B)/libpgpipe.a $(I)/lib/libpgpipe.a
	rm -f $(I)/lib/libpgpipe.so.$(VERSION) && cp $(B)/libpgpipe.so.$(VERSION) $(I)/lib/
	ln -sf libpgpipe.so.$(VERSION) $(I)/lib/$(SONAME)
	ln -sf $(SONAME) $(I)/lib/libpgpipe.so
	cp $(B)/pgpipe $(I)/bin/pgpipe
	cp $(B)/pgpipe.1 $(I)/share/man/man1/pgpipe.1
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' -e 's|@PQ_CFLAGS@|$(strip $(PG_CFLAGS))|' \
	  -e 's|@PQ_LIBS@|$(strip $(PG_LIBS))|' tool/pgpipe.pc.in > $(I)/lib/pkgconfig/pgpipe.pc
	@echo "installed into $(I)"

CROSS_CC ?= aarch64-linux-gnu-gcc
cross: pgpipe.c pgpipe.h
	@sh tool/cross.sh $(CROSS_CC)

# the aarch64 unit tests and the end-to-end run under qemu, on a throwaway server
cross-test: pgpipe.c pgpipe.h $(B)/test/pgpipe
	@PGPIPE_TOP=$(CURDIR) sh tool/pgtmp.sh run -- sh -c 'sh test/sh/cross_qemu.sh && sh test/sh/cross_qemu_e2e.sh'

# 32-bit ARM: the library and the shell compile (and the spool's unit tests
# run under qemu-arm when there is an armhf libpq to link)
CROSS32_CC ?= arm-linux-gnueabihf-gcc
cross-arm32: pgpipe.c pgpipe.h
	@mkdir -p $(B)/cross
	$(CROSS32_CC) $(STRICT) -Os $(PG_CFLAGS) -c pgpipe.c -o $(B)/cross/pgpipe-arm32.o
	$(CROSS32_CC) $(STRICT) -Os -DPGPIPE_OMIT_THREADS $(PG_CFLAGS) -c pgpipe.c -o $(B)/cross/pgpipe-arm32-nothreads.o
	@size $(B)/cross/pgpipe-arm32.o $(B)/cross/pgpipe-arm32-nothreads.o

# ---- benchmarks and fuzzing --------------------------------------------------
BENCHES := $(notdir $(patsubst %/run.sh,%,$(wildcard test/bench/*/run.sh)))
bench: pgpipe.c pgpipe.h
	@sh test/bench/all.sh $(BENCHES)

bench-%: pgpipe.c pgpipe.h
	@sh test/bench/$*/run.sh

$(B)/fuzz/fuzz_%: test/fuzz/fuzz_%.c pgpipe.c
	@mkdir -p $(B)/fuzz
	$(CLANG) -std=c11 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	  $(PG_CFLAGS) -I. \
	  $< $(LIBS) -o $@

.PRECIOUS: $(B)/fuzz/fuzz_%
fuzz-%: $(B)/fuzz/fuzz_%
	@mkdir -p $(B)/fuzz/corpus-$*
	$(B)/fuzz/fuzz_$* -max_total_time=$(SECONDS) -print_final_stats=1 \
	  $(B)/fuzz/corpus-$* $(wildcard test/fuzz/seeds-$*)

demo:
	@[ "$(SKIP_DEPS)" = 1 ] || sh tool/deps.sh --demo --quiet
	@$(MAKE) --no-print-directory -j$(JOBS) all
	@$(MAKE) --no-print-directory demo-run

demo-run: all
	@sh tool/demo.sh

# ---- reliability (test/chaos, test/load, test/valgrind) --------------------------
chaos: pgpipe.c
	@CHAOS_SEED=$${CHAOS_SEED:-$$(date +%s)} CHAOS_SECONDS=$${CHAOS_SECONDS:-120} \
	  CHAOS_RECORDS=$${CHAOS_RECORDS:-60000} sh test/chaos/run.sh

load-test: pgpipe.c pgpipe.h
	@sh test/load/run.sh

valgrind: pgpipe.c
	@sh test/valgrind/run.sh

clean:
	rm -rf $(B)
