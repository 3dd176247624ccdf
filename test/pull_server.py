#!/usr/bin/env python3
"""The API the pull tests and bench-pull request: paged JSON fixtures in every
pagination style, and the faults a real API shows.

    python3 test/pull_server.py --port-file FILE [--port N]

Writes the port it listens on (127.0.0.1) to FILE once it accepts. Records
are made up from their number i (1-based): {"id":i,"type":"t<i%3>",
"updated_at":"2026-01-01T..","name":"n<i>"}. Every style takes n (records
in the listing) and since (only records with id > since), and:

    /link?per=P&page=K        Link: <...>; rel="next" (relative URL)
    /cursor?per=P&cursor=C    {"data":{"items":[..]},"next_cursor":..,"has_more":..}
                              cursor = the offset (opaque=1: "c<offset>z")
    /offset?offset=O&limit=L  {"items":[..],"total":n}
    /page?page=K&per_page=P   {"results":[..],"total_pages":..,"total":n}

Faults, on the page whose 1-based index is at= (default 2):

    fault=429 | 503     first request: that status with Retry-After: ra
                        seconds (ra=date: as an HTTP date), after hold=MS
    fault=500           the first two requests: 500
    fault=drop          first request: half the body, then the connection closes
    fault=stall         first request: no answer for 10 s
    fault=malformed     the body is cut JSON, always
    fault=backwards     the next cursor goes back (cursor style)
    fault=repeat        the Link next names the page itself
    fault=total         the total (offset, page) says 5 more than there are
    fault=pages         total_pages says one page fewer than there are
    fault=ratelimit     X-RateLimit-Remaining: 0, X-RateLimit-Reset: 1 (seconds)
    fault=hugereset     X-RateLimit-Remaining: 0, X-RateLimit-Reset: in 3000 years
    fault=hugera        first request: 429 with Retry-After: 99999999999999999999
    fault=link_host     the Link next names the same page on host "localhost"
    fault=link_https    the Link next is the https:// of the same page
    fault=link_file     the Link next is file:///etc/passwd
    fault=redir_file    302 to file:///etc/passwd
    fault=samerecords   every page holds the first page's records (the cursor,
                        offset or page is ignored; the next one still advances)
    fault=bomb          the body is gzip (always) of 32 MB that inflates from 32 kB
    fault=badmeta       offset: the body holds "meta":"x<byte 0xFF>" beside the items

A request that arrives while a Retry-After or a rate-limit reset it gave is
still running gets a 429 without Retry-After and counts as "early" in
/stats. Other parameters: gzip=1 (gzip when the client accepts it),
delay=MS (before each page), cap=N (offset: at most N records a page,
whatever the limit), cache=1 (a page's body is made once and
kept: the benchmark), bad=K,L (record K lacks "type", record L
holds \\u0000), nonobj=1 (each page's array also holds 42, "x",
null and [1]), pad=B (each record has "pad": B x's), padrec=K:B (record K
has "pad": B x's), badrec=K:KIND,... (record K is not JSON inside: KIND
utf8 = bytes 0xFF 0xFE in its name, ctrl = a raw U+0001 and newline, esc =
\\q, surr = \\ud800, nan = "score":NaN, ninf = "score":-Infinity, long = 40000 raw U+0001
then 40000 bytes 0xFF, huge = 600000 of each), auth=bearer|basic|key (401 unless Authorization: Bearer
s3cret-token / Basic user:pa55 / X-Api-Key: k3y-value).
GET /stats: {"requests":..,"gzip":..,"early":..,"faults":..,"auth_failed":..}.
"""
import argparse
import base64
import email.utils
import gzip
import json
import math
import os
import socket
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

lock = threading.Lock()
stats = {"requests": 0, "gzip": 0, "early": 0, "faults": 0, "auth_failed": 0}
fired = {}          # fault key -> times fired
page_cache = {}     # cache=1: (path, query) -> (headers, body), for the benchmark
not_before = [0.0]  # monotonic time before which a request is early

BASE = 1767225600  # 2026-01-01T00:00:00Z


BADREC = {"utf8": ("\udcff\udcfe", ""), "ctrl": ("\x01\nx", ""), "esc": ("\\q", ""),
          "surr": ("\\ud800x", ""), "nan": ("", ',"score":NaN'), "ninf": ("", ',"score":-Infinity'),
          "long": ("\x01" * 40000 + "\udcff" * 40000, ""),
          "huge": ("\x01" * 600000 + "\udcff" * 600000, ""),
          "tricky": ("\\t\\n\\r\\\\N\\\\.\\u00e9\u00e9\\\"", ',"o":{"b":[1,2.50],"a":null}')}


def record(i, bad_type=False, bad_nul=False, pad=0, badrec=None):
    ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(BASE + i))
    extra = ',"pad":"%s"' % ("x" * pad) if pad else ""
    if bad_type:
        return '{"id":%d,"updated_at":"%s","name":"n%d"%s}' % (i, ts, i, extra)
    name = "n%d\\u0000" % i if bad_nul else "n%d" % i
    if badrec:
        name += BADREC[badrec][0]
        extra += BADREC[badrec][1]
    return '{"id":%d,"type":"t%d","updated_at":"%s","name":"%s"%s}' % (i, i % 3, ts, name, extra)


bomb = []


def bomb_body():
    """32 MB of JSON in about 32 kB of gzip, made once."""
    if not bomb:
        raw = b'{"items":[{"id":1,"pad":"' + b"x" * (32 << 20) + b'"}],"total":1}'
        bomb.append(gzip.compress(raw, 9))
    return bomb[0]


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def send_body(self, status, body, headers=(), q=None):
        data = body.encode("utf-8", "surrogateescape") if isinstance(body, str) else body
        hdrs = list(headers)
        if q and q.get("gzip") == "1" and "gzip" in self.headers.get("Accept-Encoding", ""):
            data = gzip.compress(data, 1)
            hdrs.append(("Content-Encoding", "gzip"))
            with lock:
                stats["gzip"] += 1
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in hdrs:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def fault_once(self, key, times=1):
        with lock:
            n = fired.get(key, 0)
            if n < times:
                fired[key] = n + 1
                stats["faults"] += 1
                return True
        return False

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        self.post_body = self.rfile.read(n) if n else b""
        self.do_GET()

    def do_GET(self):
        u = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(u.query))
        if u.path == "/stats":
            with lock:
                self.send_body(200, json.dumps(stats))
            return
        with lock:
            stats["requests"] += 1
            early = time.monotonic() < not_before[0]
            if early:
                stats["early"] += 1
        if early:
            self.send_body(429, '{"error":"early"}')
            return
        auth = q.get("auth")
        if auth:
            want = {"bearer": ("Authorization", "Bearer s3cret-token"),
                    "basic": ("Authorization", "Basic " + base64.b64encode(b"user:pa55").decode()),
                    "key": ("X-Api-Key", "k3y-value")}[auth]
            if self.headers.get(want[0]) != want[1]:
                with lock:
                    stats["auth_failed"] += 1
                self.send_body(401, '{"error":"unauthorized"}')
                return
        if q.get("cache") == "1":
            hit = page_cache.get(self.path)
            if hit:
                self.send_body(200, hit[1], hit[0], q)
                return
        n = int(q.get("n", "100"))
        since = int(q.get("since", "0") or 0)
        ids = range(since + 1, n + 1)
        style = u.path.strip("/")
        if style == "link":
            per = int(q.get("per", "10"))
            page = int(q.get("page", "1"))
            off = (page - 1) * per
        elif style == "cursor":
            per = int(q.get("per", "10"))
            c = q.get("cursor", "0")
            off = int(c.strip("cz") or 0)
            page = off // per + 1
        elif style == "offset":
            per = min(int(q.get("limit", "10")), int(q.get("cap", "1000000")))
            off = int(q.get("offset", "0"))
            page = off // per + 1
        elif style == "page":
            per = int(q.get("per_page", "10"))
            page = int(q.get("page", "1"))
            off = (page - 1) * per
        else:
            self.send_body(404, '{"error":"no such listing"}')
            return
        if q.get("delay"):
            time.sleep(int(q["delay"]) / 1000)
        fault = q.get("fault")
        at = int(q.get("at", "2"))
        key = (fault, u.path, q.get("n"), q.get("since"), page)
        if fault and page == at:
            if fault in ("429", "503") and self.fault_once(key):
                if q.get("hold"):
                    # answer late, after the requests sent beside it are answered
                    time.sleep(int(q["hold"]) / 1000)
                ra = q.get("ra", "1")
                if ra == "date":
                    value = email.utils.formatdate(time.time() + 2, usegmt=True)
                    wait = 1.0  # an HTTP date has whole seconds: at least 1 s away
                else:
                    value, wait = ra, float(ra)
                with lock:
                    not_before[0] = time.monotonic() + wait
                self.send_body(int(fault), '{"error":"slow down"}', [("Retry-After", value)])
                return
            if fault == "hugera" and self.fault_once(key):
                self.send_body(429, '{"error":"go away"}', [("Retry-After", "9" * 20)])
                return
            if fault == "redir_file":
                self.send_body(302, '{}', [("Location", "file:///etc/passwd")])
                return
            if fault == "500" and self.fault_once(key, 2):
                self.send_body(500, '{"error":"oops"}')
                return
            if fault == "stall" and self.fault_once(key):
                time.sleep(10)
                self.close_connection = True
                return
            if fault == "malformed":
                self.send_body(200, '{"items": [{"id": 1}, {"id": 2')
                return
            if fault == "bomb":
                data = bomb_body()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Encoding", "gzip")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
        bad = [int(x) for x in q.get("bad", "").split(",") if x]
        chunk = ids[0:per] if fault == "samerecords" else ids[off:off + per]
        pad = int(q.get("pad", "0"))
        padrec = dict(tuple(int(y) for y in x.split(":")) for x in q.get("padrec", "").split(",") if x)
        badrec = dict((int(x.split(":")[0]), x.split(":")[1]) for x in q.get("badrec", "").split(",") if x)
        items = "[" + ",".join(record(i, len(bad) > 0 and i == bad[0],
                                      len(bad) > 1 and i == bad[1], padrec.get(i, pad),
                                      badrec.get(i)) for i in chunk) + "]"
        if q.get("nonobj") == "1":
            items = items[:-1] + (',' if chunk else '') + '42,"x",null,[1]]'
        total = len(ids)
        headers = []
        if style == "link":
            body = items
            if off + per < total:
                nq = dict(q)
                nq["page"] = str(page + 1)
                if fault == "repeat" and page == at:
                    nq["page"] = str(page)
                target = "%s?%s" % (u.path, urllib.parse.urlencode(nq))
                port = self.server.server_address[1]
                if page == at and fault == "link_host":
                    target = "http://localhost:%d%s" % (port, target)
                elif page == at and fault == "link_https":
                    target = "https://127.0.0.1:%d%s" % (port, target)
                elif page == at and fault == "link_file":
                    target = "file:///etc/passwd"
                headers.append(("Link", '<%s>; rel="next", <%s?page=1>; rel="first"'
                                % (target, u.path)))
        elif style == "cursor":
            more = off + per < total
            nxt = off + per if more else off + len(chunk)
            if fault == "backwards" and page == at:
                nxt = max(0, off - per)
            cur = ("c%dz" % nxt) if q.get("opaque") == "1" else nxt
            body = '{"data":{"items":%s},"next_cursor":%s,"has_more":%s}' % (
                items, json.dumps(cur), "true" if more else "false")
        elif style == "offset":
            rep = total + 5 if fault == "total" else total
            meta = ',"meta":"x\udcff"' if fault == "badmeta" and page == at else ""
            body = '{"items":%s,"total":%d%s}' % (items, rep, meta)
        else:
            pages = math.ceil(total / per) if total else 0
            if fault == "pages":
                pages -= 1
            rep = total + 5 if fault == "total" else total
            body = '{"results":%s,"total_pages":%d,"total":%d}' % (items, pages, rep)
        if fault == "drop" and page == at and self.fault_once(key):
            data = body.encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[:len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if fault == "ratelimit" and page == at and self.fault_once(key):
            with lock:
                not_before[0] = time.monotonic() + 1
            headers += [("X-RateLimit-Remaining", "0"), ("X-RateLimit-Reset", "1")]
        if fault == "hugereset" and page == at:
            headers += [("X-RateLimit-Remaining", "0"), ("X-RateLimit-Reset", "99999999999")]
        if q.get("cache") == "1":
            page_cache[self.path] = (headers, body.encode())
        self.send_body(200, body, headers, q)


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # a client that hung up (a timeout, kill -9) is part of the tests


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file", required=True)
    a = ap.parse_args()
    srv = Server(("127.0.0.1", a.port), H)
    tmp = a.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(srv.server_address[1]))
    os.rename(tmp, a.port_file)
    srv.serve_forever()


if __name__ == "__main__":
    main()
