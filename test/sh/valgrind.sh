#!/bin/sh
# make test: no database
# valgrind memcheck on the shell running the demo at a small size (every
# shell invocation; no error, no definite or indirect leak). Skips when
# valgrind is missing (sh tool/deps.sh installs it).
cd "${PGPIPE_TOP:-.}"
command -v valgrind >/dev/null 2>&1 || { echo "valgrind missing"; exit 77; }
VG_ROWS=${VG_ROWS:-1000} VG_DIR=${PGPIPE_TEST_TMP:-/tmp}/valgrind sh test/valgrind/run.sh
