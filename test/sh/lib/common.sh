# test/sh/lib/common.sh: the helpers the script tests (test/sh/*.sh) share.
# Not a test itself (test/run.sh runs test/sh/*.sh only). POSIX sh: the tests
# run under sh (dash). A script sources it after moving to the top directory,
# which is where test/run.sh runs it from (PGPIPE_TOP is that directory):
#     cd "${PGPIPE_TOP:-.}"
#     . test/sh/lib/common.sh
# It defines functions only: no variables, no traps, no output. What is the
# script's own (its database, $P, $D, $tmp, HOME, cleanup) stays in the script.

# fail MESSAGE...: the test failed: print "FAIL: MESSAGE" on standard output
# (printf, so a backslash in MESSAGE is printed as it is) and exit 1.
# A script that wants more on failure (a server log's tail, a cleanup)
# defines its own fail after sourcing this file; has, hasnt and same below
# call whichever fail is defined when they run.
fail() { printf 'FAIL: %s\n' "$*"; exit 1; }

# has TEXT PART: fail unless a line of TEXT contains the fixed string PART,
# showing PART and the whole TEXT.
has() { printf '%s\n' "$1" | grep -qF -- "$2" || fail "expected '$2' in:
$1"; }

# hasnt TEXT PART: fail if a line of TEXT contains the fixed string PART,
# showing PART and the whole TEXT.
hasnt() { printf '%s\n' "$1" | grep -qF -- "$2" && fail "did not expect '$2' in:
$1"; return 0; }

# same GOT WANT WHAT: fail unless GOT is exactly WANT, naming the check WHAT
# and showing both.
same() { [ "$1" = "$2" ] || fail "$3: expected
$2
got
$1"; }

# need_pgpipe: skip the test (exit 77, as test/run.sh counts a skip) when the
# test build of the shell, $P, is not there.
need_pgpipe() { [ -x "$P" ] || { echo "build/test/pgpipe missing (make test-build)"; exit 77; }; }
