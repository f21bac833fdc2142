// The Queue/Worker code of a BullMQ seed (shared/reference/bullmq-queue-service-plan.md,
// QueueService), with only the import and the connection changed. See README "From BullMQ".
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { Queue, Worker } from 'jobwire'; // was: from 'bullmq'
import { startBroker } from './broker.js';

let broker;
before(async () => { broker = await startBroker(); });
after(async () => { await broker.stop(); });

const DEFAULT_JOB_OPTIONS = {
  attempts: 3,
  backoff: { type: 'exponential', delay: 1000 }, // 1s, 2s, 4s
  removeOnComplete: { count: 100, age: 24 * 3600 }, // keep the last 100 completed for 24 h
  removeOnFail: { count: 500 },
};

test('the seed QueueService runs unchanged but for the connection', async () => {
  const { port } = new URL(broker.url.replace('jobwire:', 'http:'));
  const connection = { host: '127.0.0.1', port: Number(port) }; // was: REDIS_HOST / REDIS_PORT
  const queues = new Map();
  const workers = new Map();
  const log = [];

  function getQueue(name) {
    if (!queues.has(name)) {
      queues.set(name, new Queue(name, { connection, defaultJobOptions: DEFAULT_JOB_OPTIONS }));
    }
    return queues.get(name);
  }
  async function addJob(queueName, jobName, data, options) {
    const queue = getQueue(queueName);
    return queue.add(jobName, data, { ...DEFAULT_JOB_OPTIONS, ...options });
  }
  function createWorker(queueName, processor, options) {
    const worker = new Worker(queueName, processor, { connection, concurrency: 5, ...options });
    worker.on('completed', (job) => log.push(`Job ${job.id} completed`));
    worker.on('failed', (job, err) => log.push(`Job ${job?.id} failed: ${err.message}`));
    workers.set(`${queueName}:worker`, worker);
    return worker;
  }

  createWorker('email', async (job) => ({ success: true, data: { sentTo: job.data.to } }), { drainDelay: 0.2 });
  const job = await addJob('email', 'send-welcome', { to: 'ada@example.com' }, { priority: 1 });
  assert.deepEqual(await job.waitUntilFinished(undefined, 15_000), { success: true, data: { sentTo: 'ada@example.com' } });
  const stored = await getQueue('email').getJob(job.id);
  assert.equal(stored.returnvalue.success, true);
  assert.equal(stored.maxAttempts, 3);

  for (const worker of workers.values()) await worker.close();
  for (const queue of queues.values()) await queue.close();
  assert.deepEqual(log, [`Job ${job.id} completed`]);
});
