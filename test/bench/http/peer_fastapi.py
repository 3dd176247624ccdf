"""The FastAPI peer of make bench-http: POST /v1/events/{source} (NDJSON or a
JSON object) into staging.raw_events, answered 202 after the INSERT commits,
written the way a FastAPI user writes it: uvicorn workers, an asyncpg pool.

PEER_MODE=insert  one INSERT per request (executemany of the request's rows in
                  one transaction when it holds more than one)
PEER_MODE=batch   the batched form: requests wait up to PEER_WINDOW_MS (2, the
                  same window as pgpipe's group commit) or PEER_BATCH rows, then
                  one executemany in one transaction answers all of them
PEER_POOL         connections per worker (default 16)

Run: python3 -m uvicorn peer_fastapi:app --workers 2 (with --app-dir here);
the database comes from the PG* variables."""
import asyncio
import json
import os

import asyncpg
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

MODE = os.environ.get("PEER_MODE", "insert")
POOL = int(os.environ.get("PEER_POOL", "16"))
WINDOW = float(os.environ.get("PEER_WINDOW_MS", "2")) / 1000.0
BATCH = int(os.environ.get("PEER_BATCH", "5000"))
INSERT = ("INSERT INTO staging.raw_events (source, event_type, payload) "
          "VALUES ($1, $2, $3::jsonb)")

app = FastAPI()
pool = None


@app.on_event("startup")
async def startup():
    global pool
    pool = await asyncpg.create_pool(min_size=POOL, max_size=POOL)


@app.on_event("shutdown")
async def shutdown():
    await pool.close()


def rows_of(source, body, ctype):
    """The (source, event_type, payload) rows of a body; 400 on bad JSON."""
    try:
        if ctype.startswith("application/x-ndjson"):
            lines = [ln for ln in body.decode().split("\n") if ln.strip()]
            docs = [(json.loads(ln), ln) for ln in lines]
        else:
            doc = json.loads(body)
            items = doc if isinstance(doc, list) else [doc]
            docs = [(d, json.dumps(d)) for d in items]
    except ValueError as e:
        raise HTTPException(status_code=400, detail=str(e))
    return [(source, str(d.get("event_type", "")) if isinstance(d, dict) else "", text)
            for d, text in docs]


class Batcher:
    """Rows of many requests, written by one executemany per window."""

    def __init__(self):
        self.rows = []
        self.waiters = []
        self.timer = None

    def add(self, rows):
        fut = asyncio.get_running_loop().create_future()
        self.rows.extend(rows)
        self.waiters.append(fut)
        if len(self.rows) >= BATCH:
            self.flush()
        elif self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(WINDOW, self.flush)
        return fut

    def flush(self):
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        rows, waiters = self.rows, self.waiters
        self.rows, self.waiters = [], []
        if rows:
            asyncio.ensure_future(self.write(rows, waiters))

    async def write(self, rows, waiters):
        try:
            async with pool.acquire() as conn:
                async with conn.transaction():
                    await conn.executemany(INSERT, rows)
        except Exception as e:  # every request of the batch fails with it
            for w in waiters:
                w.set_exception(e)
            return
        for w in waiters:
            w.set_result(None)


batcher = Batcher()


@app.post("/v1/events/{source}")
async def ingest(source: str, request: Request):
    rows = rows_of(source, await request.body(), request.headers.get("content-type", ""))
    if MODE == "batch":
        await batcher.add(rows)
    else:
        async with pool.acquire() as conn:
            if len(rows) == 1:
                await conn.execute(INSERT, *rows[0])
            else:
                async with conn.transaction():
                    await conn.executemany(INSERT, rows)
    return JSONResponse({"accepted": len(rows)}, status_code=202)


@app.get("/healthz")
async def healthz():
    return {"ok": True}
