#!/usr/bin/python3
"""The peer of bench-pull: the API ingestion loop an ingestion article shows,
written as well as its libraries allow: httpx (one AsyncClient, kept-alive
connection) fetches each page, json parses it, asyncpg inserts the page's
records with executemany in one transaction, then the Link next page.

    peer_python.py URL DSN SOURCE     prints the records loaded
"""
import asyncio
import json
import sys

import asyncpg
import httpx


def connect_args(dsn):
    """A libpq key=value conninfo as asyncpg's keyword arguments."""
    if "://" in dsn:
        return {"dsn": dsn}
    names = {"dbname": "database", "host": "host", "port": "port", "user": "user",
             "password": "password"}
    return {names[k]: v for k, v in (w.split("=", 1) for w in dsn.split()) if k in names}


async def main(url, dsn, source):
    conn = await asyncpg.connect(**connect_args(dsn))
    n = 0
    async with httpx.AsyncClient(timeout=60) as client:
        while url:
            r = await client.get(url)
            r.raise_for_status()
            records = r.json()
            async with conn.transaction():
                await conn.executemany(
                    "INSERT INTO staging.raw_events (source, event_type, payload) "
                    "VALUES ($1, $2, $3::jsonb)",
                    [(source, "items", json.dumps(rec)) for rec in records])
            n += len(records)
            nxt = r.links.get("next")
            url = str(r.url.join(nxt["url"])) if nxt else None
    await conn.close()
    print(n)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
