# The status page of `pgpipe run` in a real headless browser (Debian's
# chromium through chromedriver and Selenium), for test/sh/run_browser.sh:
# loads URL, saves a screenshot, and checks the figures the page marks with
# data-metric attributes against EXPECTED (a JSON object the test built from
# the database):
#   {"backlog": {"EVENT_TYPE": N, ...}, "dlq": {"ERROR MESSAGE": N, ...},
#    "instances": N}
# Prints one line per problem and exits 1 when there is any; 0 when every
# figure is on the page and matches.
#   python3 run_browser.py URL EXPECTED.json SCREENSHOT.png
import json
import re
import sys

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

url, expected_path, shot = sys.argv[1], sys.argv[2], sys.argv[3]
expected = json.load(open(expected_path))

opts = Options()
opts.binary_location = "/usr/bin/chromium"
for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
          "--window-size=1280,1600", "--disable-extensions", "--no-first-run"):
    opts.add_argument(a)
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
problems = []
try:
    driver.set_page_load_timeout(20)
    driver.get(url)
    driver.save_screenshot(shot)

    # what the page is: one HTML page, no framework, nothing fetched besides it
    title = driver.title
    resources = driver.execute_script(
        "return performance.getEntriesByType('resource').map(function (e) { return e.name; })")
    # (the favicon is the browser's own request, not the page's)
    resources = [r for r in resources if not r.split("?")[0].endswith("/favicon.ico")]
    if resources:
        problems.append("the page fetched other resources (it must have no external assets): %s" % resources)
    if not driver.find_elements(By.CSS_SELECTOR, "svg"):
        problems.append("no inline <svg> (the throughput chart) on the page")

    # every element with data-metric: its data-* attributes and its text
    marked = driver.execute_script("""
        return Array.prototype.map.call(document.querySelectorAll('[data-metric]'), function (e) {
            var a = {};
            for (var i = 0; i < e.attributes.length; i++) {
                var n = e.attributes[i].name;
                if (n.indexOf('data-') === 0) a[n.substring(5)] = e.attributes[i].value;
            }
            return {attrs: a, text: e.textContent};
        });""")

    def number(m):
        # data-value when the page gives the raw figure, else the text
        # (thousands separators and blanks dropped)
        v = m["attrs"].get("value", m["text"])
        t = re.sub(r"[\s,\u00a0\u202f']", "", v)
        try:
            return int(t)
        except ValueError:
            try:
                return float(t)
            except ValueError:
                return None

    def find(metric, key_attrs, key):
        for m in marked:
            if m["attrs"].get("metric") != metric:
                continue
            if any(m["attrs"].get(k) == key for k in key_attrs):
                return m
        return None

    print("page %r: %d marked figures" % (title, len(marked)))
    for m in marked:
        print("  %s = %r" % (" ".join("%s=%s" % kv for kv in sorted(m["attrs"].items())), m["text"].strip()))

    for et, n in sorted(expected.get("backlog", {}).items()):
        m = find("backlog", ("event-type",), et)
        if m is None:
            problems.append('no data-metric="backlog" data-event-type="%s" on the page' % et)
        elif number(m) != n:
            problems.append("backlog of %s: the page shows %r, the database has %d" % (et, m["text"].strip(), n))
    for err, n in sorted(expected.get("dlq", {}).items()):
        m = find("dlq", ("error", "error-message", "key"), err)
        if m is None:
            problems.append('no data-metric="dlq" data-error="%s" on the page' % err)
        elif number(m) != n:
            problems.append("dead letters with error %r: the page shows %r, the database has %d"
                            % (err, m["text"].strip(), n))
    if "instances" in expected:
        m = find("instances", ("metric",), "instances")
        if m is None:
            problems.append('no data-metric="instances" on the page')
        elif number(m) != expected["instances"]:
            problems.append("instances alive: the page shows %r, the database has %d"
                            % (m["text"].strip(), expected["instances"]))
finally:
    driver.quit()

for p in problems:
    print("FAIL: " + p)
sys.exit(1 if problems else 0)
