// Broker restarts (SIGKILL, then start again on the same port and data directory).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { Connection, ConnectionLostError, Queue, Worker } from '../dist/index.js';
import { Broker, eventually, queueName } from './broker.js';

let broker;
before(async () => { broker = await new Broker().start(); });
after(async () => { await broker.stop(); });

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

test('a worker reconnects after a broker restart and goes on; a stale ack is counted', async (t) => {
  const name = queueName();
  const queue = new Queue(name, { connection: broker.url });
  let release;
  const gate = new Promise((resolve) => { release = resolve; });
  const runs = [];
  const worker = new Worker(name, async (job) => {
    runs.push([job.data, job.attemptsMade]);
    if (job.data === 'held' && job.attemptsMade === 0) await gate;
    return job.data;
  }, { connection: { url: broker.url, reconnectBaseMs: 50, reconnectMaxMs: 400 }, drainDelay: 0.2 });
  const errors = [];
  worker.on('error', (error) => errors.push(error));
  t.after(() => Promise.all([worker.close(), queue.close()]));

  const held = await queue.add('n', 'held', { attempts: 3, backoff: 0 });
  await eventually(() => runs.length === 1, 10_000, 'the first delivery');
  // A reservation is journaled but its reply does not wait for the commit (SPEC §6.4): `get`'s
  // reply does, so once it says active, the attempt is on disk and survives the kill.
  assert.equal(await held.getState(), 'active');
  await broker.kill();
  await sleep(300);
  await broker.start();
  release(); // its ack goes to the new broker process with the old lease token
  assert.equal(await held.waitUntilFinished(undefined, 20_000), 'held');
  await eventually(() => worker.stats.staleOutcomes + worker.stats.lostOutcomes >= 1, 10_000, 'the old ack refused');
  assert.deepEqual(runs.map(([data]) => data), ['held', 'held'], 'redelivered after the restart');
  assert.equal(runs[1][1], 1, 'the restart counted one attempt');

  const after = await queue.addBulk(Array.from({ length: 20 }, (_, i) => ({ name: 'n', data: i })));
  await Promise.all(after.map((job) => job.waitUntilFinished(undefined, 20_000)));
  assert.equal(worker.connection.reconnects, 1);
  assert.ok(errors.length >= 1 && errors.every((error) => error instanceof ConnectionLostError),
    `connection loss reported on the error event: ${errors.map(String)}`);
  await worker.close();
  await queue.close();
});

test('an add made while the broker is down waits and goes out after it is back', async () => {
  const name = queueName();
  const queue = new Queue(name, { connection: { url: broker.url, reconnectBaseMs: 50, reconnectMaxMs: 200 } });
  const errors = [];
  queue.on('error', (error) => errors.push(error));
  await queue.add('n', 'before');
  await broker.kill();
  const pending = queue.add('n', 'during', { jobId: 'during-outage' });
  await sleep(500);
  await broker.start();
  const job = await pending;
  assert.equal(job.id, 'during-outage');
  assert.equal(await queue.getWaitingCount(), 2);
  assert.equal(errors.length, 1, 'the lost connection, once, on the error event');
  assert.ok(errors[0] instanceof ConnectionLostError);
  await queue.close();
});

test('with no broker, a request fails after offlineTimeoutMs with a clear message', async () => {
  const connection = new Connection({ url: 'jobwire://127.0.0.1:9', offlineTimeoutMs: 300, reconnectMaxMs: 100 });
  await assert.rejects(connection.request('ping'), (error) => error instanceof ConnectionLostError
    && /no broker at 127\.0\.0\.1:9 for 300 ms: is `jobwire serve` running\?/.test(error.message));
  await connection.close();
});

test('a wrong token is fatal: no reconnect loop', async () => {
  const secured = await new Broker(['--token', 's3cret']).start();
  try {
    const bad = new Connection(`jobwire://wrong@127.0.0.1:${secured.port}`);
    await assert.rejects(bad.request('ping'), (error) => error.code === 'UNAUTHORIZED');
    assert.equal(bad.closed, true);
    await assert.rejects(bad.request('ping'), (error) => error.code === 'UNAUTHORIZED');
    const good = new Connection(`jobwire://s3cret@127.0.0.1:${secured.port}`);
    assert.ok(typeof (await good.request('ping')).now === 'bigint');
    await good.close();
  } finally {
    await secured.stop();
  }
});

test('prefetched jobs are not run after their connection was lost (the broker redelivers them)', async (t) => {
  const name = queueName();
  const queue = new Queue(name, { connection: broker.url });
  let release;
  const gate = new Promise((resolve) => { release = resolve; });
  const runs = [];
  const worker = new Worker(name, async (job) => {
    runs.push(`${job.data}@${job.attemptsMade}`);
    if (job.data === 'A' && job.attemptsMade === 0) await gate;
  }, { connection: { url: broker.url, reconnectBaseMs: 50, reconnectMaxMs: 400 }, concurrency: 1, prefetch: 2, drainDelay: 0.2 });
  worker.on('error', () => undefined);
  t.after(() => Promise.all([worker.close(true), queue.close()]));
  const jobs = await queue.addBulk(['A', 'B', 'C'].map((data) => ({ name: 'n', data, opts: { backoff: 0 } })));
  await eventually(async () => (await queue.getActiveCount()) === 3, 10_000, 'one running, two prefetched');
  await broker.kill();
  await broker.start();
  release();
  await Promise.all(jobs.map((job) => job.waitUntilFinished(undefined, 20_000)));
  assert.deepEqual(runs.filter((run) => run.endsWith('@0')), ['A@0'], `runs: ${runs}`);
});

test('close() while the broker is away does not wait for it to come back', async (t) => {
  const name = queueName();
  const worker = new Worker(name, async () => undefined,
    { connection: { url: broker.url, offlineTimeoutMs: 600_000 }, drainDelay: 0.2 });
  worker.on('error', () => undefined);
  await worker.waitUntilReady();
  await broker.kill();
  t.after(() => broker.start());
  await eventually(() => !worker.connection.connected, 10_000, 'the connection lost');
  const closed = await Promise.race([worker.close().then(() => 'closed'), sleep(20_000).then(() => 'still waiting')]);
  assert.equal(closed, 'closed');
});
