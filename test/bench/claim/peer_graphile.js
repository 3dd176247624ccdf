// graphile-worker: N jobs queued with graphile_worker.add_jobs, then a runner
// with concurrency W (and a local queue of B jobs where the version has it)
// for SECS seconds; prints jobs/s. Usage: node peer_graphile.js W B SECS N [setup]
const { run, makeWorkerUtils, Logger } = require("graphile-worker");
const quiet = new Logger(() => () => {});
const { Client } = require("pg");
const [W, B, SECS, N, mode] = process.argv.slice(2);
// the server comes from PGHOST, PGPORT, PGUSER, PGDATABASE (a Unix socket dir works)
const conn = { host: process.env.PGHOST, port: Number(process.env.PGPORT || 5432),
               user: process.env.PGUSER, database: process.env.PGDATABASE };
(async () => {
  const c = new Client(conn);
  await c.connect();
  if (mode === "setup") {
    const utils = await makeWorkerUtils({ logger: quiet, pgPool: new (require("pg").Pool)(conn) });
    await utils.migrate();
    await utils.release();
    await c.query("DELETE FROM graphile_worker._private_jobs");
    await c.query(`SELECT graphile_worker.add_jobs(array(SELECT json_populate_record(
        null::graphile_worker.job_spec, json_build_object('identifier', 't',
        'payload', json_build_object('n', g))) FROM generate_series(1, ${Number(N)}) g))`);
    await c.query("VACUUM ANALYZE graphile_worker._private_jobs");
    await c.end();
    return;
  }
  const count = async () =>
    Number((await c.query("SELECT count(*) FROM graphile_worker._private_jobs")).rows[0].count);
  const before = await count();
  let done = 0;
  const t0 = Date.now();
  const runner = await run({
    pgPool: new (require("pg").Pool)({ ...conn, max: Number(W) + 2 }), concurrency: Number(W), noHandleSignals: true, pollInterval: 1000, logger: quiet,
    taskList: { t: async () => { done++; } },
    preset: { worker: { localQueue: { size: Number(B) }, completeJobBatchDelay: 0 } },
  });
  // until SECS pass or every queued job is done (then the rate counts the time used)
  while (Date.now() - t0 < Number(SECS) * 1000 && done < before)
    await new Promise((r) => setTimeout(r, 20));
  const el = (Date.now() - t0) / 1000;
  const n = done;
  await runner.stop();
  const after = await count();
  await c.end();
  console.log(`${(n / el).toFixed(0)} ${n} ${el.toFixed(3)} ${before - after}`);
})().catch((e) => { console.error(e); process.exit(1); });
