-- wrk script of make bench-http: POST the same NDJSON body over and over.
--   WRK_EVENTS_PER_BODY=N wrk ... -s post.lua URL -- BODY_FILE
-- With WRK_DELAY_MS in the environment every connection waits that long after
-- each answer before its next request (a fixed rate: connections x 1000 /
-- (delay + latency) requests/s), for latency at a given load.
-- done() prints one line:
--   result requests=N secs=S non2xx=N errors=N events_per_s=R p50_ms=X p99_ms=Y
function init(args)
    local f = assert(io.open(args[1], "rb"))
    wrk.body = f:read("*a")
    f:close()
    wrk.method = "POST"
    wrk.headers["Content-Type"] = "application/x-ndjson"
end

local delay_ms = tonumber(os.getenv("WRK_DELAY_MS") or "")
if delay_ms and delay_ms > 0 then
    function delay() return delay_ms end
end

function done(summary, latency, requests)
    local e = summary.errors
    local secs = summary.duration / 1e6
    local ok = summary.requests - e.status
    local n = tonumber(os.getenv("WRK_EVENTS_PER_BODY") or "1")
    io.write(string.format(
        "result requests=%d secs=%.3f non2xx=%d errors=%d events_per_s=%.0f p50_ms=%.3f p99_ms=%.3f\n",
        summary.requests, secs, e.status, e.connect + e.read + e.write + e.timeout,
        ok * n / secs, latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
