"""The source articles' worker pattern with psycopg2: W processes, each a loop of
BEGIN; SELECT ... FOR UPDATE SKIP LOCKED LIMIT n; UPDATE ... SET processed = true;
COMMIT, for SECS seconds. Prints events/s."""
import multiprocessing as mp
import sys
import time

import psycopg2


def worker(dsn, batch, secs, start, q):
    conn = psycopg2.connect(dsn)
    cur = conn.cursor()
    while time.time() < start:
        time.sleep(0.001)
    end = start + secs
    n = 0
    while time.time() < end:
        cur.execute("SELECT id, source, event_type, payload FROM staging.raw_events"
                    " WHERE NOT processed ORDER BY received_at, id LIMIT %s"
                    " FOR UPDATE SKIP LOCKED", (batch,))
        rows = cur.fetchall()
        if not rows:
            conn.commit()
            break
        ids = [r[0] for r in rows]  # "process" the batch: trivial
        cur.execute("UPDATE staging.raw_events SET processed = true, processed_at = now()"
                    " WHERE id = ANY(%s)", (ids,))
        conn.commit()
        n += len(ids)
    q.put((n, time.time()))
    conn.close()


def main():
    dsn, workers, batch, secs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    q = mp.Queue()
    start = time.time() + 0.5
    procs = [mp.Process(target=worker, args=(dsn, batch, secs, start, q)) for _ in range(workers)]
    for p in procs:
        p.start()
    res = [q.get() for _ in procs]
    for p in procs:
        p.join()
    total = sum(r[0] for r in res)
    el = max(r[1] for r in res) - start
    print("%.0f %d %.3f" % (total / el, total, el))


if __name__ == "__main__":
    main()
