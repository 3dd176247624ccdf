#!/bin/sh
# tool/deps.sh finds everything the build and the tests need on this machine.
cd "${PGPIPE_TOP:-.}"
out=$(sh tool/deps.sh --check 2>&1); rc=$?
echo "$out"
[ $rc = 0 ] && echo "$out" | grep -q 'all dependencies present'
