# The status page of `pgpipe run` in a real headless browser (Debian's
# chromium through chromedriver and Selenium), for test/sh/run_browser.sh:
# loads URL, saves a screenshot, and checks the figures the page marks with
# data-metric attributes against CHECKS, a JSON list the test built from the
# database; each check names the element by its data-* attributes:
#   {"metric": "backlog", "attrs": {"event-type": "user"}, "value": 7}
#       the element's number is 7
#   {"metric": ..., "attrs": ..., "min": 5}            at least 5
#   {"metric": ..., "attrs": ..., "age_of": EPOCH}     a number of seconds:
#       the page's build time (data-epoch of #built-at) - EPOCH, within 2 s
#   {"metric": ..., "attrs": ..., "epoch_in": [A, B]}  an ISO 8601 time in [A, B]
#   "optional": true  a check whose element may be missing
#   {"runs": N}   the recent runs table lists N runs (rows with
#       data-run-status), every failure before every success
# Also: the page fetches nothing besides itself (no external asset), has the
# inline SVG chart, and its processed-last-hour figure is the sum of the
# chart's bars. Prints what the page marks and one line per problem; exits 1
# when there is any.
#   python3 run_browser.py URL CHECKS.json SCREENSHOT.png
import datetime
import json
import re
import sys

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

url, checks_path, shot = sys.argv[1], sys.argv[2], sys.argv[3]
checks = json.load(open(checks_path))

opts = Options()
opts.binary_location = "/usr/bin/chromium"
for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
          "--window-size=1280,1400", "--disable-extensions", "--no-first-run"):
    opts.add_argument(a)
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
problems = []


def number(text):
    # thousands separators and blanks dropped
    t = re.sub(r"[\s,\u00a0\u202f']", "", text)
    for conv in (int, float):
        try:
            return conv(t)
        except ValueError:
            pass
    return None


try:
    driver.set_page_load_timeout(20)
    driver.get(url)
    driver.save_screenshot(shot)

    # one snapshot of the page in one script run (the page reloads itself
    # every few seconds): every element with data-metric, its data-*
    # attributes and text; the build time; the chart's bars
    page = driver.execute_script("""
        function attrs(e) {
            var a = {};
            for (var i = 0; i < e.attributes.length; i++) {
                var n = e.attributes[i].name;
                if (n.indexOf('data-') === 0) a[n.substring(5)] = e.attributes[i].value;
            }
            return a;
        }
        var b = document.getElementById('built-at');
        return {
            title: document.title,
            built: b ? b.getAttribute('data-epoch') : null,
            marked: Array.prototype.map.call(document.querySelectorAll('[data-metric]'),
                function (e) { return {attrs: attrs(e), text: e.textContent}; }),
            runs: Array.prototype.map.call(document.querySelectorAll('[data-run-status]'),
                function (e) { return e.getAttribute('data-run-status'); }),
            bars: Array.prototype.map.call(document.querySelectorAll('svg [data-count]'),
                function (e) { return e.getAttribute('data-count'); }),
            svgs: document.querySelectorAll('svg').length,
            resources: performance.getEntriesByType('resource').map(function (e) { return e.name; })
        };""")
finally:
    driver.quit()

marked = page["marked"]
print("page %r, built at %s: %d marked figures" % (page["title"], page["built"], len(marked)))
for m in marked:
    print("  %s = %r" % (" ".join("%s=%s" % kv for kv in sorted(m["attrs"].items())), m["text"].strip()))

# (the favicon is the browser's own request, not the page's)
res = [r for r in page["resources"] if not r.split("?")[0].endswith("/favicon.ico")]
if res:
    problems.append("the page fetched other resources (it must have no external assets): %s" % res)
if not page["svgs"]:
    problems.append("no inline <svg> (the throughput chart) on the page")


def find(metric, attrs):
    for m in marked:
        a = m["attrs"]
        if a.get("metric") == metric and all(a.get(k) == v for k, v in attrs.items()):
            return m
    return None


print("runs listed: %s" % " ".join(page["runs"]))
for c in checks:
    if "runs" in c:
        runs = page["runs"]
        if len(runs) != c["runs"]:
            problems.append("the page lists %d recent runs, the database has %d" % (len(runs), c["runs"]))
        ok_seen = False
        for st in runs:
            bad = st in ("failed", "timeout", "lost", "missed")
            if bad and ok_seen:
                problems.append("recent runs: a %s run listed after a successful one (failures come first): %s"
                                % (st, " ".join(runs)))
                break
            ok_seen |= not bad
        continue
    what = 'data-metric="%s" %s' % (c["metric"], " ".join('data-%s="%s"' % kv for kv in sorted(c["attrs"].items())))
    m = find(c["metric"], c["attrs"])
    if m is None:
        if c.get("optional"):
            print("note: no %s on the page" % what)
        else:
            problems.append("no %s on the page" % what)
        continue
    text = m["text"].strip()
    if "epoch_in" in c:
        try:
            t = datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
        except ValueError:
            problems.append("%s: %r is not an ISO 8601 time" % (what, text))
            continue
        lo, hi = c["epoch_in"]
        if not lo <= t <= hi:
            problems.append("%s: %s is not between %s and %s" % (
                what, text, datetime.datetime.utcfromtimestamp(lo).isoformat() + "Z",
                datetime.datetime.utcfromtimestamp(hi).isoformat() + "Z"))
        continue
    v = number(text)
    if v is None:
        problems.append("%s: %r is not a number" % (what, text))
    elif "value" in c and v != c["value"]:
        problems.append("%s: the page shows %s, the database has %s" % (what, text, c["value"]))
    elif "min" in c and v < c["min"]:
        problems.append("%s: the page shows %s, the database has at least %s" % (what, text, c["min"]))
    elif "age_of" in c:
        if page["built"] is None:
            problems.append("no data-epoch on #built-at: the age %s cannot be checked" % what)
        else:
            want = int(page["built"]) - c["age_of"]
            if abs(v - want) > 2:
                problems.append("%s: the page shows %s s, %d s expected at its build time" % (what, text, want))

# the chart and the figure beside it agree
m = find("processed-last-hour", {})
if m is not None and page["bars"]:
    total = sum(int(b) for b in page["bars"])
    if number(m["text"].strip()) != total:
        problems.append("processed-last-hour %r is not the sum of the chart's bars (%d)" % (m["text"].strip(), total))

for p in problems:
    print("FAIL: " + p)
sys.exit(1 if problems else 0)
