// Flow control against a real broker: the queue's rate and concurrency limits (SPEC §8.18), a
// Worker's `limiter`, and "not now" with worker.rateLimit + Worker.RateLimitError (§8.16).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { BrokerError, Queue, RateLimitError, Worker } from '../dist/index.js';
import { eventually, queueName, startBroker } from './broker.js';

let broker;
before(async () => { broker = await startBroker(); });
after(async () => { await broker.stop(); });

function newQueue(t) {
  const queue = new Queue(queueName('flow'), { connection: broker.url });
  t.after(() => queue.close());
  return queue;
}

function newWorker(t, queue, processor, opts = {}) {
  const worker = new Worker(queue.name, processor, { connection: broker.url, drainDelay: 0.1, ...opts });
  t.after(() => worker.close(true));
  return worker;
}

const isBadArgument = (field) => (error) => {
  assert.ok(error instanceof BrokerError, `expected a BrokerError, got ${error}`);
  assert.equal(error.code, 'BAD_ARGUMENT');
  assert.match(error.message, new RegExp(`^BAD_ARGUMENT: ${field.replace('.', '\\.')}`));
  return true;
};

test('global concurrency and rate limit: set, read, remove', async (t) => {
  const queue = newQueue(t);
  assert.equal(await queue.getGlobalConcurrency(), null);
  assert.equal(await queue.getGlobalRateLimit(), null);
  const set = await queue.setGlobalConcurrency(4);
  assert.equal(set.concurrency, 4);
  await queue.setGlobalRateLimit(10, 2500);
  assert.equal(await queue.getGlobalConcurrency(), 4);
  assert.deepEqual(await queue.getGlobalRateLimit(), { max: 10, duration: 2500 });
  assert.deepEqual(await queue.getLimits(), { rateLimit: { max: 10, duration: 2500 }, concurrency: 4, pausedUntil: null, rateFreeAt: null });
  await queue.removeGlobalConcurrency();
  assert.equal(await queue.getGlobalConcurrency(), null);
  assert.deepEqual(await queue.getGlobalRateLimit(), { max: 10, duration: 2500 }, 'the rate limit stays');
  await queue.removeGlobalRateLimit();
  assert.equal(await queue.getGlobalRateLimit(), null);
  assert.equal(await queue.getRateLimitTtl(), 0);
});

test('bad limits are the broker\'s BAD_ARGUMENT naming the field; a bad limiter is refused at once', async (t) => {
  const queue = newQueue(t);
  await assert.rejects(queue.setGlobalConcurrency(0), isBadArgument('concurrency'));
  await assert.rejects(queue.setGlobalConcurrency(1.5), isBadArgument('concurrency'));
  await assert.rejects(queue.setGlobalRateLimit(0, 1000), isBadArgument('rate.max'));
  await assert.rejects(queue.setGlobalRateLimit(5, 0), isBadArgument('rate.period_ms'));
  await assert.rejects(queue.setGlobalRateLimit(5, 40 * 86_400_000), isBadArgument('rate.period_ms'));
  assert.deepEqual(await queue.getLimits(), { rateLimit: null, concurrency: null, pausedUntil: null, rateFreeAt: null }, 'nothing changed');
  const noop = async () => undefined;
  assert.throws(() => new Worker(queue.name, noop, { connection: broker.url, limiter: { max: 0, duration: 1000 } }), RangeError);
  assert.throws(() => new Worker(queue.name, noop, { connection: broker.url, limiter: { max: 1, duration: 1000, groupKey: 'g' } }), TypeError);
});

test('a Worker limiter sets the queue\'s rate limit: at most max starts in any window of duration', async (t) => {
  const queue = newQueue(t);
  const max = 3;
  const duration = 600;
  const worker = newWorker(t, queue, async (job) => job.data, { concurrency: 10, limiter: { max, duration } });
  await worker.waitUntilReady();
  const jobs = await queue.addBulk(Array.from({ length: 10 }, (_, n) => ({ name: 'limited', data: n })));
  await Promise.all(jobs.map((job) => job.waitUntilFinished(undefined, 30_000)));
  assert.deepEqual(await queue.getGlobalRateLimit(), { max, duration });
  // The broker's own start times (started_at): no window of `duration` ms holds more than `max`.
  const starts = (await Promise.all(jobs.map((job) => queue.getJob(job.id)))).map((job) => job.processedOn).sort((a, b) => a - b);
  for (let i = 0; i + max < starts.length; i += 1) {
    assert.ok(starts[i + max] - starts[i] >= duration,
      `starts ${i} and ${i + max} are ${starts[i + max] - starts[i]} ms apart: more than ${max} in ${duration} ms`);
  }
  await worker.close();
  assert.deepEqual(await queue.getGlobalRateLimit(), { max, duration }, 'the limit belongs to the queue: it stays');
});

test('global concurrency bounds the active jobs across workers', async (t) => {
  const queue = newQueue(t);
  await queue.setGlobalConcurrency(2);
  let active = 0;
  let most = 0;
  const processor = async () => {
    active += 1;
    most = Math.max(most, active);
    await new Promise((resolve) => setTimeout(resolve, 30));
    active -= 1;
  };
  newWorker(t, queue, processor, { concurrency: 5 });
  newWorker(t, queue, processor, { concurrency: 5 });
  const jobs = await queue.addBulk(Array.from({ length: 12 }, (_, n) => ({ name: 'c', data: n })));
  await Promise.all(jobs.map((job) => job.waitUntilFinished(undefined, 30_000)));
  assert.ok(most <= 2, `${most} jobs ran at once`);
  assert.ok(most >= 1);
});

test('worker.rateLimit + Worker.RateLimitError: the job waits without an attempt, the queue pauses', async (t) => {
  const queue = newQueue(t);
  const seen = [];
  let limited;
  const limitedOnce = new Promise((resolve) => { limited = resolve; });
  const worker = newWorker(t, queue, async (job) => {
    seen.push(job.attemptsMade);
    if (seen.length === 1) {
      await worker.rateLimit(1500);
      limited();
      throw Worker.RateLimitError();
    }
    return 'done';
  });
  // attempts: 1 — a counted attempt would fail the job for good.
  const job = await queue.add('api-call', { n: 1 }, { attempts: 1 });
  await limitedOnce;
  const paused = await eventually(async () => (await queue.getLimits()).pausedUntil, 10_000, 'the queue paused');
  assert.ok(paused > Date.now() - 1000);
  assert.equal(await job.waitUntilFinished(undefined, 30_000), 'done');
  assert.deepEqual(seen, [0, 0], 'the rate-limited delivery was not counted');
  const finished = await queue.getJob(job.id);
  assert.equal(finished.state, 'completed');
  assert.equal(finished.attemptsMade, 1);
  assert.equal(worker.stats.rateLimited, 1);
  assert.equal(worker.stats.failed, 0);
});

test('a RateLimitError with its own delay: that job only, no queue pause; resume lifts a pause', async (t) => {
  const queue = newQueue(t);
  let calls = 0;
  const worker = newWorker(t, queue, async () => {
    calls += 1;
    if (calls === 1) throw new RateLimitError(300);
    return calls;
  });
  const job = await queue.add('once', null, { attempts: 1 });
  assert.equal(await job.waitUntilFinished(undefined, 30_000), 2);
  assert.equal((await queue.getLimits()).pausedUntil, null);
  assert.equal((await queue.getJob(job.id)).attemptsMade, 1);
  assert.equal(worker.stats.rateLimited, 1);
  assert.throws(() => new RateLimitError(-1), RangeError);
});

test('queue.resume() lifts a "not now" pause early', async (t) => {
  const queue = newQueue(t);
  let calls = 0;
  const worker = newWorker(t, queue, async () => {
    calls += 1;
    if (calls === 1) {
      await worker.rateLimit(600_000);
      throw Worker.RateLimitError();
    }
    return 'late';
  });
  const job = await queue.add('x', null);
  await eventually(async () => (await queue.getRateLimitTtl()) > 60_000, 10_000, 'a long pause');
  assert.equal((await queue.getJob(job.id)).state, 'delayed');
  await queue.resume();
  assert.equal(await queue.getRateLimitTtl(), 0);
  assert.equal((await queue.getLimits()).pausedUntil, null);
  // The job itself stays delayed for the ten minutes; the worker's own pause is local.
  assert.equal((await queue.getJob(job.id)).state, 'delayed');
});

test('worker.rateLimit(ms) without a throw pauses the whole queue on the broker', async (t) => {
  const queue = newQueue(t);
  const idle = newWorker(t, queue, async () => 'idle');
  const other = newWorker(t, queue, async () => 'other');
  await idle.waitUntilReady();
  const before = Date.now();
  await idle.rateLimit(60_000);
  const { pausedUntil } = await queue.getLimits();
  assert.ok(pausedUntil >= before + 59_000, `pausedUntil ${pausedUntil}`);
  assert.ok((await queue.getRateLimitTtl()) > 50_000);
  const job = await queue.add('held', null);
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.equal((await queue.getJob(job.id)).state, 'waiting', 'no worker took it, the other one neither');
  assert.equal(other.stats.completed, 0);
  await queue.resume();
  assert.equal(await queue.getRateLimitTtl(), 0);
});

test('getRateLimitTtl reports a full rate window; rateFreeAt shows when it has room', async (t) => {
  const queue = newQueue(t);
  await queue.setGlobalRateLimit(1, 60_000);
  await queue.add('first', null);
  await queue.add('second', null);
  assert.equal((await queue.getLimits()).rateFreeAt, null);
  newWorker(t, queue, async () => 'ok');
  await eventually(async () => (await queue.getCompletedCount()) === 1, 10_000, 'one job ran');
  const { rateFreeAt } = await queue.getLimits();
  assert.ok(rateFreeAt > Date.now() + 30_000, `rateFreeAt ${rateFreeAt}`);
  const ttl = await queue.getRateLimitTtl();
  // At most the period plus one of its 1,024 slots (a start counts until its slot ends, SPEC §8.18).
  assert.ok(ttl > 30_000 && ttl <= 60_000 + 60_000 / 1024 + 1, `ttl ${ttl}`);
  await queue.removeGlobalRateLimit();
  assert.equal(await queue.getRateLimitTtl(), 0);
});
