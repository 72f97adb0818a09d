// BullMQ side of bench/compare.sh: N no-op jobs through a private redis-server, added by P
// concurrent producers (one Queue and connection each) with queue.add, or with addBulk in chunks,
// and processed by a Worker with concurrency C in a second node process (so producers and worker
// do not share one event loop, as AGENTZ's clients and worker do not). The rate is N divided by
// the time from the first add to the last job's finishedOn (BullMQ's own completion timestamp,
// the score of the completed set). Prints one JSON object on stdout.
//
//   node bullmq.mjs --redis /path/redis.sock --jobs 5000 --producers 16 --concurrency 16 --mode add|bulk
//   node bullmq.mjs worker --redis ... --queue NAME --concurrency 16   (started by the above)
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Queue, Worker } from 'bullmq';
import IORedis from 'ioredis';

function args(argv) {
  const o = { role: 'drive', redis: '', jobs: 5000, producers: 16, concurrency: 16, mode: 'add', queue: '', chunk: 1000 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === 'worker') o.role = 'worker';
    else if (a === '--redis') o.redis = argv[++i];
    else if (a === '--jobs') o.jobs = Number(argv[++i]);
    else if (a === '--producers') o.producers = Number(argv[++i]);
    else if (a === '--concurrency') o.concurrency = Number(argv[++i]);
    else if (a === '--mode') o.mode = argv[++i];
    else if (a === '--queue') o.queue = argv[++i];
    else if (a === '--chunk') o.chunk = Number(argv[++i]);
    else throw new Error(`bullmq.mjs: unknown argument ${a}`);
  }
  if (!o.redis) throw new Error('bullmq.mjs: --redis SOCKET is required');
  if (!['add', 'bulk'].includes(o.mode)) throw new Error('bullmq.mjs: --mode is add or bulk');
  return o;
}

// One ioredis connection (BullMQ 6 takes a client instance in ESM): a unix socket path, or
// host:port on loopback. BullMQ needs maxRetriesPerRequest null for workers.
function connection(redis) {
  const base = { maxRetriesPerRequest: null };
  if (redis.startsWith('/')) return new IORedis({ ...base, path: redis });
  const [host, port] = redis.split(':');
  return new IORedis({ ...base, host, port: Number(port) });
}

async function worker(o) {
  const w = new Worker(o.queue, async () => null, { connection: connection(o.redis), concurrency: o.concurrency, autorun: false });
  w.on('error', (e) => console.error(`bullmq worker: ${e.message}`));
  await w.waitUntilReady();
  process.stdout.write('ready\n');
  process.on('SIGTERM', async () => { await w.close(); process.exit(0); });
  w.run();
}

async function drive(o) {
  const queue = `compare-${process.pid}-${o.mode}`;
  const wk = spawn(process.execPath, [fileURLToPath(import.meta.url), 'worker', '--redis', o.redis, '--queue', queue,
    '--concurrency', String(o.concurrency)], { stdio: ['ignore', 'pipe', 'inherit'] });
  const stopWorker = () => { if (wk.exitCode === null) wk.kill('SIGTERM'); };
  process.on('exit', stopWorker);
  await new Promise((resolve, reject) => {
    wk.stdout.on('data', (d) => { if (String(d).includes('ready')) resolve(); });
    wk.on('exit', (code) => reject(new Error(`bullmq worker exited ${code} before it was ready`)));
  });

  const queues = [];
  for (let p = 0; p < o.producers; p++) {
    const q = new Queue(queue, { connection: connection(o.redis) });
    await q.waitUntilReady();
    queues.push(q);
  }
  const t0 = Date.now();
  await Promise.all(queues.map(async (q, p) => {
    const from = Math.floor((o.jobs * p) / o.producers), to = Math.floor((o.jobs * (p + 1)) / o.producers);
    if (o.mode === 'add') {
      for (let i = from; i < to; i++) await q.add('noop', { i });
    } else {
      for (let i = from; i < to; i += o.chunk) {
        const batch = [];
        for (let j = i; j < Math.min(to, i + o.chunk); j++) batch.push({ name: 'noop', data: { i: j } });
        await q.addBulk(batch);
      }
    }
  }));
  const addedMs = Date.now() - t0;
  const q = queues[0];
  const deadline = Date.now() + 600_000;
  for (;;) {
    const counts = await q.getJobCounts('completed', 'failed');
    if (counts.failed) throw new Error(`${counts.failed} bullmq jobs failed`);
    if (counts.completed >= o.jobs) break;
    if (Date.now() > deadline) throw new Error(`only ${counts.completed} of ${o.jobs} bullmq jobs completed in 600 s`);
    await new Promise((r) => setTimeout(r, 20));
  }
  // The completed set is scored by finishedOn (ms): its highest score is the last completion.
  const probe = connection(o.redis);
  const last = await probe.zrange(`bull:${queue}:completed`, -1, -1, 'WITHSCORES');
  probe.disconnect();
  const lastMs = Number(last[1]);
  const spanS = (lastMs - t0) / 1000;
  stopWorker();
  await Promise.all(queues.map((x) => x.close()));
  console.log(JSON.stringify({ system: 'bullmq', mode: o.mode, jobs: o.jobs, producers: o.producers,
    concurrency: o.concurrency, add_per_s: o.jobs / (addedMs / 1000), span_s: spanS, jobs_per_s: o.jobs / spanS }));
  process.exit(0);
}

const o = args(process.argv.slice(2));
(o.role === 'worker' ? worker(o) : drive(o)).catch((e) => { console.error(`bullmq.mjs: ${e.message}`); process.exit(1); });
