// BullMQ's side of bench/roundtrip.py: N jobs queued first, then one Worker runs them, each
// job doing one pipelined SET/SET/INCR/SETBIT through a client of its own (not the queue's).
// Usage: node roundtrip.js REDIS_URL QUEUE N CONCURRENCY
// Prints one JSON line: {"rate": jobs/s, "count": counter, "bits": bitmap population}.
"use strict";
const { Queue, Worker } = require("bullmq");
const IORedis = require("ioredis");

async function main() {
  const [url, name, nText, concText] = process.argv.slice(2);
  const n = Number(nText);
  const concurrency = Number(concText);
  const connection = { url, maxRetriesPerRequest: null };
  const app = new IORedis(url);
  const counter = `${name}:count`;
  const bitmap = `${name}:bits`;
  const queue = new Queue(name, { connection });
  const jobs = [];
  for (let i = 0; i < n; i++) {
    jobs.push({ name: "roundtrip", data: { i }, opts: { removeOnComplete: 1000 } });
  }
  for (let i = 0; i < n; i += 1000) await queue.addBulk(jobs.slice(i, i + 1000));
  let done = 0;
  let began = 0;
  const finished = new Promise((resolve) => {
    const worker = new Worker(
      name,
      async (job) => {
        const i = job.data.i;
        await app
          .pipeline()
          .set(`${name}:a:${i % 100}`, "x")
          .set(`${name}:b:${i % 100}`, "y")
          .incr(counter)
          .setbit(bitmap, i, 1)
          .exec();
        return i;
      },
      { connection, concurrency, autorun: false },
    );
    worker.on("completed", () => {
      done += 1;
      if (done === n) resolve(worker);
    });
    began = performance.now();
    worker.run();
  });
  const worker = await finished;
  const rate = n / ((performance.now() - began) / 1000);
  await worker.close();
  const count = Number(await app.get(counter));
  const bits = await app.bitcount(bitmap);
  await queue.obliterate({ force: true });
  await queue.close();
  await app.del(counter, bitmap);
  app.disconnect();
  process.stdout.write(JSON.stringify({ rate, count, bits }) + "\n");
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
