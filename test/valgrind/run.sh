#!/bin/sh
# `make valgrind`: the demo (tool/demo.sh) at a small size with every shell
# invocation under valgrind memcheck. Fails on any memcheck error or any
# definitely/indirectly lost block.
#
#   VG_ROWS=2000 sh test/valgrind/run.sh     (builds build/valgrind/pgpipe, -O1 -g)
#
# Each invocation writes its own log (build/valgrind/vg.PID.log); the summary
# lists the invocations, their errors and leaks.
set -u
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"
command -v valgrind >/dev/null 2>&1 || { echo "valgrind missing (sh tool/deps.sh --valgrind)"; exit 77; }
out=${VG_DIR:-build/valgrind}
mkdir -p "$out"
# the shell at -O1 -g from the amalgamation (pgpipe.c, regenerated when a source is newer), no
# sanitizer (valgrind and ASan do not mix)
make -s pgpipe.c >/dev/null
vg=$top/build/valgrind/pgpipe
mkdir -p build/valgrind
if [ ! -x "$vg" ] || [ pgpipe.c -nt "$vg" ] || [ shell.c -nt "$vg" ]; then
    ${CC:-cc} -std=c11 -Wall -Wextra -Wpedantic -Werror -O1 -g \
        $(pkg-config --cflags libpq 2>/dev/null || echo -I"$(pg_config --includedir)") -I. \
        shell.c pgpipe.c $(pkg-config --libs libpq 2>/dev/null || echo -lpq) -lpthread -lm \
        -o "$vg" || exit 1
fi
rm -f "$out"/vg.*.log
out=$(cd "$out" && pwd)
# the wrapper the demo runs instead of the shell
cat >"$out/pgpipe-vg" <<EOW
#!/bin/sh
exec valgrind -q --tool=memcheck --leak-check=full --show-leak-kinds=definite,indirect \\
  --errors-for-leak-kinds=definite,indirect --track-origins=yes --error-exitcode=97 \\
  --log-file="$out/vg.%p.log" "$vg" "\$@"
EOW
chmod +x "$out/pgpipe-vg"
DEMO_ROWS=${VG_ROWS:-2000} PGPIPE_SHELL="$out/pgpipe-vg" sh tool/demo.sh >"$out/demo.log" 2>&1
rc=$?
n=$(ls "$out"/vg.*.log 2>/dev/null | wc -l)
bad=0
for f in "$out"/vg.*.log; do
    [ -f "$f" ] || continue
    if [ -s "$f" ]; then
        bad=$((bad + 1))
        echo "== $f"; head -n 60 "$f"
    fi
done
grep -q 'yes: nothing lost, nothing twice' "$out/demo.log" || { echo "demo did not finish with its counts adding up:"; tail -n 30 "$out/demo.log"; rc=${rc:-1}; [ $rc = 0 ] && rc=1; }
echo "valgrind: $n shell invocations under memcheck, $bad with errors or leaks (demo exit $rc)"
[ $rc = 0 ] && [ $bad = 0 ] && [ $n -gt 0 ]
