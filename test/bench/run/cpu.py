# CPU ticks used so far, for make bench-run: one line
#   TOTAL_SERVER PGPIPE LAUNCHER
# TOTAL_SERVER: the throwaway cluster, i.e. the postmaster (with the children it
# has reaped: pg_cron's one-job connections) and its live children; PGPIPE:
# the pgpipe process; LAUNCHER: the "pg_cron launcher" background worker
# (pg_cron's own client side). In clock ticks (os.sysconf SC_CLK_TCK).
#   python3 cpu.py POSTMASTER_PID PGPIPE_PID
import os
import sys


def stat(pid):
    try:
        with open("/proc/%s/stat" % pid) as f:
            s = f.read()
    except OSError:
        return None
    # the command name is in parentheses and may hold blanks
    f = s[s.rindex(")") + 2:].split()
    # f[0] is field 3 (state): utime 14, stime 15, cutime 16, cstime 17, ppid 4
    return {"ppid": int(f[1]), "self": int(f[11]) + int(f[12]), "children": int(f[13]) + int(f[14])}


def cmdline(pid):
    try:
        with open("/proc/%s/cmdline" % pid, "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return ""


pm, pp = sys.argv[1], sys.argv[2]
total = launcher = 0
s = stat(pm)
if s:
    total = s["self"] + s["children"]
for pid in os.listdir("/proc"):
    if not pid.isdigit() or pid == pm:
        continue
    s = stat(pid)
    if s and str(s["ppid"]) == pm:
        total += s["self"]
        if "pg_cron launcher" in cmdline(pid):
            launcher = s["self"]
s = stat(pp)
print(total, s["self"] if s else 0, launcher)
