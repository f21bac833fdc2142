// Worker calls against a real broker: processing, events, retries, leases, graceful close.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { Queue, UnrecoverableError, Worker } from '../dist/index.js';
import { eventually, queueName, startBroker } from './broker.js';

let broker;
before(async () => { broker = await startBroker(); });
after(async () => { await broker.stop(); });

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A queue and a worker on it, closed after the test whatever happens (close is idempotent). */
function setup(t, processor, workerOpts = {}) {
  const name = queueName();
  const queue = new Queue(name, { connection: broker.url });
  const worker = new Worker(name, processor, { connection: broker.url, drainDelay: 0.1, ...workerOpts });
  t.after(() => Promise.all([worker.close(true), queue.close()]));
  return { queue, worker };
}

test('the processor gets job.id, name, data, attemptsMade; its return value is the result', async (t) => {
  const seen = [];
  const { queue, worker } = setup(t, async (job, token) => {
    seen.push({ id: job.id, name: job.name, data: job.data, attemptsMade: job.attemptsMade, token, lease: job.token });
    return { doubled: job.data.n * 2 };
  });
  const job = await queue.add('double', { n: 21 });
  assert.deepEqual(await job.waitUntilFinished(undefined, 10_000), { doubled: 42 });
  assert.equal(seen.length, 1);
  assert.deepEqual({ ...seen[0], token: undefined, lease: undefined }, { id: job.id, name: 'double', data: { n: 21 }, attemptsMade: 0, token: undefined, lease: undefined });
  assert.match(seen[0].token, /^\d+$/, 'the token is passed as a decimal string');
  // Lease tokens are uint64 (each broker boot counts from a random 62-bit base): a bigint,
  // presented back unchanged by the ack that completed the job.
  assert.equal(typeof seen[0].lease, 'bigint');
  assert.equal(String(seen[0].lease), seen[0].token);
  const done = await queue.getJob(job.id);
  assert.equal(done.state, 'completed');
  assert.deepEqual(done.returnvalue, { doubled: 42 });
  assert.equal(done.attemptsMade, 1);
  await worker.close();
  await queue.close();
});

test('events: active, progress, completed, failed, drained', async (t) => {
  const events = [];
  const { queue, worker } = setup(t, async (job) => {
    await job.updateProgress({ step: 1 });
    await job.updateProgress(100);
    if (job.data === 'bad') throw new Error('nope');
    return 'ok';
  });
  for (const name of ['active', 'progress', 'completed', 'failed', 'drained']) {
    worker.on(name, (...args) => events.push([name, ...args]));
  }
  await queue.add('good', 'good');
  await queue.add('bad', 'bad', { attempts: 1 });
  await eventually(() => events.some(([name]) => name === 'drained'), 10_000, 'drained');
  const names = events.map(([name]) => name);
  assert.equal(names.filter((n) => n === 'active').length, 2);
  assert.equal(names.filter((n) => n === 'progress').length, 4);
  const completed = events.find(([name]) => name === 'completed');
  assert.equal(completed[1].name, 'good');
  assert.equal(completed[2], 'ok');
  const failed = events.find(([name]) => name === 'failed');
  assert.equal(failed[1].name, 'bad');
  assert.equal(failed[2].message, 'nope');
  assert.equal(failed[1].failedReason, 'nope');
  assert.deepEqual(events.filter(([name]) => name === 'progress').map(([, , p]) => p), [{ step: 1 }, 100, { step: 1 }, 100]);
  const stored = await queue.getJobCounts('completed', 'failed');
  assert.deepEqual(stored, { completed: 1, failed: 1 });
  assert.deepEqual(worker.stats, { completed: 1, failed: 1, released: 0, leasesLost: 0, rateLimited: 0, staleOutcomes: 0, lostOutcomes: 0 });
  await worker.close();
  await queue.close();
});

test('updateProgress is visible to producers while the job runs', async (t) => {
  let release;
  const gate = new Promise((resolve) => { release = resolve; });
  const { queue, worker } = setup(t, async (job) => { await job.updateProgress(42); await gate; });
  const job = await queue.add('n', {});
  await eventually(async () => (await queue.getJob(job.id)).progress === 42, 10_000, 'progress 42');
  assert.equal((await queue.getJob(job.id)).state, 'active');
  release();
  await job.waitUntilFinished(undefined, 10_000);
  await worker.close();
  await queue.close();
});

test('retries with backoff (ms), and UnrecoverableError fails at once', async (t) => {
  const attempts = [];
  const { queue, worker } = setup(t, async (job) => {
    attempts.push([job.name, job.attemptsMade]);
    if (job.name === 'flaky' && job.attemptsMade < 2) throw new Error('try again');
    if (job.name === 'fatal') throw new UnrecoverableError('never');
    return job.attemptsMade;
  });
  const flaky = await queue.add('flaky', {}, { attempts: 3, backoff: { type: 'exponential', delay: 20 } });
  const fatal = await queue.add('fatal', {}, { attempts: 5 });
  assert.equal(await flaky.waitUntilFinished(undefined, 10_000), 2);
  await assert.rejects(fatal.waitUntilFinished(undefined, 10_000), /never/);
  assert.deepEqual(attempts.filter(([name]) => name === 'flaky').map(([, n]) => n), [0, 1, 2]);
  assert.equal(attempts.filter(([name]) => name === 'fatal').length, 1, 'no retry after UnrecoverableError');
  const info = await queue.getJob(fatal.id);
  assert.equal(info.state, 'failed');
  assert.equal(info.attemptsMade, 1);
  await worker.close();
  await queue.close();
});

test('concurrency bounds the jobs running at once', async (t) => {
  let running = 0;
  let peak = 0;
  const { queue, worker } = setup(t, async () => {
    running += 1;
    peak = Math.max(peak, running);
    await sleep(30);
    running -= 1;
  }, { concurrency: 4 });
  const jobs = await queue.addBulk(Array.from({ length: 24 }, (_, i) => ({ name: 'n', data: i })));
  await Promise.all(jobs.map((job) => job.waitUntilFinished(undefined, 20_000)));
  assert.equal(peak, 4);
  await worker.close();
  await queue.close();
});

test('autorun: false waits for run(); run() twice is refused', async (t) => {
  const done = [];
  const { queue, worker } = setup(t, async (job) => { done.push(job.id); }, { autorun: false });
  await queue.add('n', {});
  await sleep(300);
  assert.equal(done.length, 0);
  assert.equal(worker.isRunning(), false);
  const running = worker.run();
  assert.equal(worker.isRunning(), true);
  await assert.rejects(worker.run(), /already running/);
  await eventually(() => done.length === 1, 10_000, 'the job');
  await worker.close();
  await running; // run() resolves once the worker is closed
  await queue.close();
});

test('the lease is extended while a processor runs past lockDuration', async (t) => {
  let runs = 0;
  const { queue, worker } = setup(t, async () => { runs += 1; await sleep(1500); return 'slow'; }, { lockDuration: 300 });
  const job = await queue.add('slow', {}, { attempts: 1 });
  assert.equal(await job.waitUntilFinished(undefined, 15_000), 'slow');
  assert.equal(runs, 1, 'never redelivered');
  assert.equal((await queue.getJob(job.id)).attemptsMade, 1);
  assert.equal(worker.stats.leasesLost, 0);
  await worker.close();
  await queue.close();
});

test('a stale lease: the ack is refused, counted, never thrown', async (t) => {
  const errors = [];
  const { queue, worker } = setup(t, async (job) => {
    if (job.attemptsMade === 0) {
      // Block the event loop past the lease: no extension can go out, the broker expires it.
      const until = Date.now() + 1200;
      while (Date.now() < until) { /* busy */ }
      return 'late';
    }
    return 'second';
  }, { lockDuration: 200 });
  worker.on('error', (error) => errors.push(error));
  const completed = [];
  worker.on('completed', (job, result) => completed.push(result));
  const job = await queue.add('n', {}, { attempts: 2, backoff: 0 });
  assert.equal(await job.waitUntilFinished(undefined, 15_000), 'second');
  await eventually(() => worker.stats.staleOutcomes === 1, 5000, 'the stale ack counted');
  await eventually(() => completed.length === 1, 5000, 'the second ack answered');
  assert.deepEqual(completed, ['second'], 'no completed event for the refused ack');
  assert.deepEqual(errors, []);
  await worker.close();
  await queue.close();
});

test('a job removed while it runs: the ack gets NOT_FOUND, counted', async (t) => {
  let release;
  const gate = new Promise((resolve) => { release = resolve; });
  const { queue, worker } = setup(t, async () => { await gate; return 1; });
  const job = await queue.add('n', {});
  await eventually(async () => (await job.getState()) === 'active', 10_000, 'active');
  await job.remove();
  release();
  await eventually(() => worker.stats.staleOutcomes === 1, 10_000, 'refused ack counted');
  assert.equal(worker.stats.completed, 0);
  await worker.close();
  await queue.close();
});

test('close() lets running jobs finish and takes no new ones', async (t) => {
  const started = [];
  const { queue, worker } = setup(t, async (job) => { started.push(job.id); await sleep(400); return job.id; }, { concurrency: 2 });
  const jobs = await queue.addBulk(Array.from({ length: 5 }, (_, i) => ({ name: 'n', data: i })));
  await eventually(() => started.length === 2, 10_000, 'two running');
  const events = [];
  worker.on('closing', () => events.push('closing'));
  worker.on('closed', () => events.push('closed'));
  await worker.close();
  assert.deepEqual(events, ['closing', 'closed']);
  const states = await Promise.all(jobs.map((job) => job.getState()));
  assert.equal(states.filter((s) => s === 'completed').length, 2, 'the running ones finished');
  assert.equal(states.filter((s) => s === 'waiting').length, 3, 'the rest wait for another worker');
  for (const job of jobs) {
    const info = await queue.getJob(job.id);
    if (info.state === 'waiting') assert.equal(info.attemptsMade, 0, 'no attempt counted');
  }
  await queue.close();
});

test('close(true) hands running jobs back without counting an attempt', async (t) => {
  let release;
  const gate = new Promise((resolve) => { release = resolve; });
  const { queue, worker } = setup(t, async () => { await gate; }, { concurrency: 2 });
  const jobs = await queue.addBulk([{ name: 'n', data: 1 }, { name: 'n', data: 2 }]);
  await eventually(async () => (await queue.getActiveCount()) === 2, 10_000, 'two active');
  await worker.close(true);
  assert.equal(worker.stats.released, 2);
  for (const job of jobs) {
    const info = await queue.getJob(job.id);
    assert.equal(info.state, 'waiting');
    assert.equal(info.attemptsMade, 0);
  }
  release();
  await queue.close();
});

test('a job that arrives at a parked reserve during close() is handed back', async (t) => {
  const ran = [];
  const { queue, worker } = setup(t, async (job) => { ran.push(job.id); }, { drainDelay: 2 });
  await worker.waitUntilReady();
  await sleep(200); // the reserve is parked at the broker now
  const closing = worker.close();
  const job = await queue.add('n', {});
  await closing;
  assert.deepEqual(ran, []);
  assert.equal(worker.stats.released, 1);
  const info = await queue.getJob(job.id);
  assert.equal(info.state, 'waiting');
  assert.equal(info.attemptsMade, 0);
  await queue.close();
});

test('pause() and resume() on a worker', async (t) => {
  const done = [];
  const { queue, worker } = setup(t, async (job) => { done.push(job.id); });
  await worker.pause();
  assert.equal(worker.isPaused(), true);
  await sleep(200); // a reserve parked before the pause may still bring one job back
  await queue.add('n', {});
  await sleep(300);
  const before = done.length;
  worker.resume();
  await eventually(() => done.length === 1, 10_000, 'the job after resume');
  assert.ok(before <= 1);
  await worker.close();
  await queue.close();
});

test('a payload the serializer cannot decode fails the attempt instead of running', async (t) => {
  const ran = [];
  const name = queueName();
  const producer = new Queue(name, { connection: broker.url, serializer: { serialize: () => Buffer.from([0x92, 0x01]), deserialize: () => null } });
  const worker = new Worker(name, async (job) => { ran.push(job.id); }, { connection: broker.url, drainDelay: 0.1 });
  t.after(() => Promise.all([worker.close(true), producer.close()]));
  const job = await producer.add('n', {}, { attempts: 1 });
  await assert.rejects(job.waitUntilFinished(undefined, 10_000), /cannot decode the payload/);
  assert.deepEqual(ran, []);
});

test('prefetch: jobs reserved ahead wait for a slot, and close() hands them back', async (t) => {
  let release;
  const gate = new Promise((resolve) => { release = resolve; });
  const started = [];
  const { queue, worker } = setup(t, async (job) => { started.push(job.id); await gate; }, { concurrency: 1, prefetch: 2 });
  const jobs = await queue.addBulk(Array.from({ length: 4 }, (_, i) => ({ name: 'n', data: i })));
  await eventually(async () => (await queue.getActiveCount()) === 3, 10_000, 'one running, two prefetched');
  assert.equal(started.length, 1, 'concurrency still bounds what runs');
  const closing = worker.close();
  release();
  await closing;
  assert.equal(worker.stats.completed, 1);
  assert.equal(worker.stats.released, 2);
  const states = await Promise.all(jobs.map((job) => queue.getJob(job.id)));
  assert.deepEqual(states.map((job) => job.state).sort(), ['completed', 'waiting', 'waiting', 'waiting']);
  for (const job of states) if (job.state === 'waiting') assert.equal(job.attemptsMade, 0);
});

test('prefetch: 0 reserves only free slots', async (t) => {
  let release;
  const gate = new Promise((resolve) => { release = resolve; });
  const { queue, worker } = setup(t, async () => { await gate; }, { concurrency: 2, prefetch: 0 });
  await queue.addBulk(Array.from({ length: 5 }, (_, i) => ({ name: 'n', data: i })));
  await eventually(async () => (await queue.getActiveCount()) === 2, 10_000, 'two active');
  await sleep(300);
  assert.equal(await queue.getActiveCount(), 2);
  release();
  await eventually(async () => (await queue.getCompletedCount()) === 5, 10_000, 'all done');
  await worker.close();
});

test('a listener that throws is reported on error and the worker goes on', async (t) => {
  const { queue, worker } = setup(t, async (job) => job.data);
  const errors = [];
  worker.on('error', (error) => errors.push(error.message));
  worker.on('completed', (job) => { if (job.data === 1) throw new Error('listener bug'); });
  const jobs = await queue.addBulk([1, 2, 3].map((data) => ({ name: 'n', data })));
  assert.deepEqual(await Promise.all(jobs.map((job) => job.waitUntilFinished(undefined, 10_000))), [1, 2, 3]);
  await eventually(() => worker.stats.completed === 3, 5000, 'three completions counted');
  assert.deepEqual(errors, ['listener bug']);
});

test('getJob of an active job names its worker (processedBy, leaseHolder) and its timeout', async (t) => {
  let release;
  const gate = new Promise((resolve) => { release = resolve; });
  let started;
  const running = new Promise((resolve) => { started = resolve; });
  const { queue } = setup(t, async () => { started(); await gate; return 'ok'; },
    { connection: { url: broker.url, clientName: 'node-holder' } });
  t.after(() => release());
  const job = await queue.add('slow', 1, { timeout: 30_000 });
  await running;
  const active = await queue.getJob(job.id);
  assert.equal(active.state, 'active');
  assert.equal(active.processedBy, 'node-holder');
  assert.equal(active.leaseHolder.client, 'node-holder');
  assert.equal(typeof active.leaseHolder.conn, 'number');
  assert.equal(active.timeout, 30_000);
  release();
  await job.waitUntilFinished(undefined, 10_000);
  const done = await queue.getJob(job.id);
  assert.equal(done.state, 'completed');
  assert.equal(done.processedBy, undefined);
  assert.equal(done.leaseHolder, undefined);
  assert.equal(done.timeout, 30_000);
  const untimed = await queue.getJob((await queue.add('plain', 2)).id);
  assert.equal(untimed.timeout, undefined);
});
