// Queue calls against a real broker (`jobwire serve` on a free port, SQLite in a temp dir).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { BrokerError, Connection, Queue, WaitTimeoutError, Worker } from '../dist/index.js';
import { eventually, queueName, startBroker } from './broker.js';

let broker;
/** Everything a test opened, closed at the end even when a test failed half-way. */
const opened = [];
before(async () => { broker = await startBroker(); });
after(async () => {
  await Promise.all(opened.map((thing) => thing.close()));
  await broker.stop();
});

function queue(opts = {}) {
  const q = new Queue(queueName(), { connection: broker.url, ...opts });
  opened.push(q);
  return q;
}

function startWorker(name, processor) {
  const w = new Worker(name, processor, { connection: broker.url, drainDelay: 0.1 });
  opened.push(w);
  return w;
}

test('add() calls in one tick share one enqueue request; each gets its job', async () => {
  const q = queue();
  await q.waitUntilReady();
  const [requests, writes] = [q.connection.requestsSent, q.connection.writes];
  const jobs = await Promise.all(Array.from({ length: 250 }, (_, i) => q.add('n', { i })));
  assert.equal(q.connection.requestsSent - requests, 1, 'one enqueue for 250 adds');
  assert.equal(q.connection.writes - writes, 1, 'in one write');
  assert.deepEqual(jobs.map((job) => job.data.i), Array.from({ length: 250 }, (_, i) => i));
  assert.equal(new Set(jobs.map((job) => job.id)).size, 250);
  assert.equal(await q.getWaitingCount(), 250);
  await q.close();
});

test('addBulk, getJob and the job fields', async () => {
  const q = queue({ defaultJobOptions: { attempts: 5, priority: 3 } });
  const jobs = await q.addBulk([
    { name: 'a', data: { x: 1 } },
    { name: 'b', data: [1, 2], opts: { attempts: 2, jobId: 'bee' } },
  ]);
  assert.deepEqual(jobs.map((job) => job.name), ['a', 'b']);
  assert.equal(jobs[1].id, 'bee');
  const a = await q.getJob(jobs[0].id);
  assert.equal(a.state, 'waiting');
  assert.deepEqual(a.data, { x: 1 });
  assert.equal(a.maxAttempts, 5, 'queue defaults apply');
  assert.equal(a.priority, 3);
  assert.equal(a.queueName, q.name);
  assert.ok(Math.abs(a.timestamp - Date.now()) < 60_000);
  assert.equal((await q.getJob('bee')).maxAttempts, 2, "a call's own options win");
  assert.equal(await q.getJob('no-such-job'), undefined);
  await q.close();
});

test('a repeated jobId creates nothing and says so', async () => {
  const q = queue();
  const first = await q.add('n', { v: 1 }, { jobId: 'same' });
  const again = await q.add('n', { v: 2 }, { jobId: 'same' });
  assert.equal(first.duplicate, false);
  assert.equal(again.duplicate, true);
  assert.equal(again.id, 'same');
  assert.deepEqual((await q.getJob('same')).data, { v: 1 });
  assert.equal(await q.count(), 1);
  await q.close();
});

test('bad input: option errors at once, broker refusals with their code', async () => {
  const q = queue();
  await assert.rejects(q.add('n', {}, { lifo: true }), /lifo: not supported/);
  await assert.rejects(q.add('n', {}, { jobId: '12345' }), (error) => error instanceof BrokerError && error.code === 'BAD_ARGUMENT');
  await assert.rejects(q.add('x'.repeat(201), {}), (error) => error.code === 'BAD_ARGUMENT');
  await q.close();
  await assert.rejects(q.add('n', {}), /closed/);
});

test('getJobCounts over every state; delay and priority', async () => {
  const q = queue();
  await q.add('later', {}, { delay: 60_000 });
  await q.add('low', { p: 5 }, { priority: 5 });
  await q.add('high', { p: 0 });
  assert.deepEqual(await q.getJobCounts('waiting', 'delayed', 'active', 'completed', 'failed'),
    { waiting: 2, delayed: 1, active: 0, completed: 0, failed: 0 });
  const all = await q.getJobCounts();
  assert.deepEqual(Object.keys(all).sort(),
    ['active', 'completed', 'delayed', 'failed', 'paused', 'prioritized', 'waiting', 'waiting-children']);
  assert.equal(await q.getJobCountByTypes('waiting', 'delayed'), 3);
  const order = [];
  const worker = startWorker(q.name, async (job) => { order.push(job.name); });
  await eventually(() => order.length === 2, 10_000, 'two jobs');
  assert.deepEqual(order, ['high', 'low'], 'lower priority number first');
  await worker.close();
  assert.deepEqual(await q.getJobCounts('completed', 'delayed'), { completed: 2, delayed: 1 });
  await q.close();
});

test('pause, resume, isPaused: waiting jobs count as paused while paused', async () => {
  const q = queue();
  await q.add('n', {});
  await q.pause();
  assert.equal(await q.isPaused(), true);
  assert.deepEqual(await q.getJobCounts('waiting', 'paused'), { waiting: 0, paused: 1 });
  const done = [];
  const worker = startWorker(q.name, async (job) => { done.push(job.id); });
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.equal(done.length, 0, 'a paused queue hands out nothing');
  await q.resume();
  assert.equal(await q.isPaused(), false);
  await eventually(() => done.length === 1, 10_000, 'the job after resume');
  await worker.close();
  await q.close();
});

test('clean, drain and remove', async () => {
  const q = queue();
  await q.addBulk(Array.from({ length: 5 }, (_, i) => ({ name: 'n', data: i })));
  await q.add('d', {}, { delay: 60_000 });
  assert.equal(await q.clean(60_000, 0, 'wait'), 0, 'nothing is a minute old');
  assert.equal(await q.clean(0, 2, 'wait'), 2, 'limit');
  await q.drain();
  assert.deepEqual(await q.getJobCounts('waiting', 'delayed'), { waiting: 0, delayed: 1 });
  await q.drain(true);
  assert.equal(await q.count(), 0);
  const job = await q.add('n', {});
  assert.equal(await q.remove(job.id), 1);
  assert.equal(await q.remove(job.id), 0);
  assert.equal(await job.getState(), 'unknown');
  await assert.rejects(q.clean(0, 0, 'active'), /cannot clean active/);
  await q.close();
});

test('getFailed, job.retry and retryJobs; waitUntilFinished rejects with the reason', async () => {
  const q = queue();
  const jobs = await q.addBulk(Array.from({ length: 3 }, (_, i) => ({ name: 'boom', data: i, opts: { attempts: 1 } })));
  let fail = true;
  const worker = startWorker(q.name, async (job) => {
    if (fail) throw new Error(`bad input ${job.data}`);
    return job.data * 10;
  });
  await assert.rejects(jobs[0].waitUntilFinished(undefined, 10_000), /Error: bad input 0/);
  await eventually(async () => (await q.getFailedCount()) === 3, 10_000, 'three failed');
  const failed = await q.getFailed();
  assert.equal(failed.length, 3);
  assert.equal(failed[0].failedReason, 'Error: bad input 2', 'newest failure first');
  assert.match(failed[0].stacktrace[0], /at /);
  assert.equal(failed[0].attemptsMade, 1);
  assert.deepEqual((await q.getFailed(1, 1)).map((job) => job.id), [failed[1].id]);
  fail = false;
  await failed[2].retry();
  assert.equal(await failed[2].waitUntilFinished(undefined, 10_000), 0);
  assert.equal(await q.retryJobs({ state: 'failed' }), 2);
  assert.equal(await jobs[2].waitUntilFinished(undefined, 10_000), 20);
  await assert.rejects(failed[2].retry(), /not a failed job/);
  await worker.close();
  await q.close();
});

test('waitUntilFinished gives up after its ttl', async () => {
  const q = queue();
  const job = await q.add('n', {});
  await assert.rejects(job.waitUntilFinished(undefined, 200), WaitTimeoutError);
  await q.close();
});

test('long delays, times and ages above 2^32 go out as integers', async () => {
  const q = queue();
  const fiftyDays = 50 * 24 * 3600 * 1000; // 4.32e9 ms: above 2^32
  const a = await q.add('n', {}, { delay: fiftyDays, backoff: { type: 'fixed', delay: fiftyDays },
    removeOnComplete: { age: fiftyDays / 1000 } });
  const b = await q.add('n', {}, { runAt: new Date(Date.now() + 3_600_000) });
  const info = await q.getJob(a.id);
  assert.equal(info.state, 'delayed');
  assert.equal(await b.getState(), 'delayed');
  await q.close();
});

test('queues can share one Connection; their calls of one tick leave in one write', async () => {
  const connection = new Connection(broker.url);
  const q1 = new Queue(queueName(), { connection });
  const q2 = new Queue(queueName(), { connection });
  await connection.connect();
  const writes = connection.writes;
  await Promise.all([q1.add('a', 1), q2.add('b', 2), q1.getJobCounts(), q2.isPaused()]);
  assert.equal(connection.writes - writes, 1, 'two enqueues and two stats in one write');
  await q1.close();
  assert.equal((await q2.add('c', 3)).name, 'c', 'closing a queue leaves a shared connection open');
  await q2.close();
  await connection.close();
  await assert.rejects(connection.request('ping'), /closed/);
});

test('queue events: waiting after an add, paused, resumed', async () => {
  const q = queue();
  const events = [];
  q.on('waiting', (job) => events.push(`waiting ${job.name}`));
  q.on('paused', () => events.push('paused'));
  q.on('resumed', () => events.push('resumed'));
  await q.add('a', 1);
  await q.pause();
  await q.resume();
  assert.deepEqual(events, ['waiting a', 'paused', 'resumed']);
  await q.close();
});
