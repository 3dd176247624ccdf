// pg-boss: N jobs inserted in chunks, then W work() subscriptions with
// batchSize B for SECS seconds; prints jobs/s.
// Usage: node peer_pgboss.js W B SECS N [setup]
const PgBoss = require("pg-boss");
const [W, B, SECS, N, mode] = process.argv.slice(2);
// the server comes from PGHOST, PGPORT, PGUSER, PGDATABASE (a Unix socket dir works)
const conn = { host: process.env.PGHOST, port: Number(process.env.PGPORT || 5432),
               user: process.env.PGUSER, database: process.env.PGDATABASE };
(async () => {
  const boss = new PgBoss({ ...conn, max: Number(W) + 2, supervise: false,
                            schedule: false });
  boss.on("error", (e) => console.error(e.message));
  await boss.start();
  if (mode === "setup") {
    try { await boss.deleteQueue("bench"); } catch (e) { /* absent */ }
    await boss.createQueue("bench");
    for (let i = 0; i < Number(N); i += 10000) {
      const jobs = [];
      for (let j = i; j < Math.min(Number(N), i + 10000); j++) jobs.push({ name: "bench", data: { n: j } });
      await boss.insert(jobs);
    }
    await boss.stop({ graceful: false, wait: true });
    return;
  }
  let done = 0;
  const t0 = Date.now();
  for (let i = 0; i < Number(W); i++)
    await boss.work("bench", { batchSize: Number(B), pollingIntervalSeconds: 0.5 },
                    async (jobs) => { done += jobs.length; });
  // until SECS pass or every queued job is done (then the rate counts the time used)
  while (Date.now() - t0 < Number(SECS) * 1000 && done < Number(N))
    await new Promise((r) => setTimeout(r, 20));
  const el = (Date.now() - t0) / 1000;
  const n = done;
  await boss.stop({ graceful: true, wait: true, timeout: 5000 });
  console.log(`${(n / el).toFixed(0)} ${n} ${el.toFixed(3)}`);
})().catch((e) => { console.error(e); process.exit(1); });
