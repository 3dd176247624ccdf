// The fastify peer of make bench-http: POST /v1/events/:source (NDJSON or a
// JSON object) into staging.raw_events, answered 202 after the INSERT
// commits, written the way a fastify user writes it: one process per core
// (node:cluster), a pg.Pool per process.
//
// PEER_MODE=insert  one INSERT per request (all of the request's rows in one
//                   multi-row statement)
// PEER_MODE=batch   the batched form: requests wait up to PEER_WINDOW_MS (2,
//                   the same window as pgpipe's group commit) or PEER_BATCH
//                   rows, then one INSERT ... SELECT FROM unnest($1, $2, $3)
//                   writes all of them
// PEER_POOL         connections per process (default 16); PEER_WORKERS (2);
// PEER_PORT         the port. The database comes from the PG* variables.
'use strict';
const cluster = require('node:cluster');
const MODE = process.env.PEER_MODE || 'insert';
const POOL = parseInt(process.env.PEER_POOL || '16', 10);
const WORKERS = parseInt(process.env.PEER_WORKERS || '2', 10);
const WINDOW = parseFloat(process.env.PEER_WINDOW_MS || '2');
const BATCH = parseInt(process.env.PEER_BATCH || '5000', 10);
const PORT = parseInt(process.env.PEER_PORT || '0', 10);

if (cluster.isPrimary) {
  for (let i = 0; i < WORKERS; i++) cluster.fork();
  cluster.on('exit', (w, code) => { if (code) process.exit(code); });
  const stop = () => { for (const id in cluster.workers) cluster.workers[id].kill('SIGTERM'); };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
} else {
  const { Pool } = require('pg');
  const fastify = require('fastify')({ logger: false, bodyLimit: 8 * 1024 * 1024 });
  const pool = new Pool({ max: POOL });

  fastify.addContentTypeParser('application/x-ndjson', { parseAs: 'string' }, (req, body, done) => {
    try {
      done(null, body.split('\n').filter((l) => l.trim() !== '').map((l) => [JSON.parse(l), l]));
    } catch (e) {
      e.statusCode = 400;
      done(e);
    }
  });

  function rowsOf(source, body) {
    const docs = Array.isArray(body) && Array.isArray(body[0]) ? body
      : (Array.isArray(body) ? body : [body]).map((d) => [d, JSON.stringify(d)]);
    return docs.map(([d, text]) => [source, d && d.event_type != null ? String(d.event_type) : '', text]);
  }

  function insertOne(rows) {
    const vals = [];
    const params = [];
    rows.forEach((r, i) => {
      vals.push(`($${3 * i + 1}, $${3 * i + 2}, $${3 * i + 3}::jsonb)`);
      params.push(r[0], r[1], r[2]);
    });
    return pool.query('INSERT INTO staging.raw_events (source, event_type, payload) VALUES ' + vals.join(', '), params);
  }

  let pending = [];
  let waiters = [];
  let timer = null;
  function flush() {
    if (timer) { clearTimeout(timer); timer = null; }
    const rows = pending;
    const ws = waiters;
    pending = []; waiters = [];
    if (rows.length === 0) return;
    pool.query('INSERT INTO staging.raw_events (source, event_type, payload) ' +
               'SELECT * FROM unnest($1::text[], $2::text[], $3::jsonb[])',
    [rows.map((r) => r[0]), rows.map((r) => r[1]), rows.map((r) => r[2])])
      .then(() => ws.forEach((w) => w.resolve()), (e) => ws.forEach((w) => w.reject(e)));
  }
  function batched(rows) {
    return new Promise((resolve, reject) => {
      for (const r of rows) pending.push(r);
      waiters.push({ resolve, reject });
      if (pending.length >= BATCH) flush();
      else if (!timer) timer = setTimeout(flush, WINDOW);
    });
  }

  fastify.post('/v1/events/:source', async (req, reply) => {
    const rows = rowsOf(req.params.source, req.body);
    if (MODE === 'batch') await batched(rows);
    else await insertOne(rows);
    reply.code(202);
    return { accepted: rows.length };
  });
  fastify.get('/healthz', async () => ({ ok: true }));

  fastify.listen({ host: '127.0.0.1', port: PORT }).catch((e) => { console.error(e); process.exit(1); });
  process.on('SIGTERM', () => fastify.close().then(() => pool.end()).then(() => process.exit(0)));
}
