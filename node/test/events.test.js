// QueueEvents over the broker's event stream, and job.waitUntilFinished(queueEvents), against a
// real broker.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { BrokerError, Queue, QueueEvents, UnrecoverableError, WaitTimeoutError, Worker } from '../dist/index.js';
import { eventually, queueName, startBroker } from './broker.js';

let broker;
before(async () => { broker = await startBroker(); });
after(async () => { await broker.stop(); });

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A queue and its QueueEvents (subscribed), closed after the test whatever happens. */
async function setup(t, opts = {}, url = broker.url) {
  const name = queueName('ev');
  const queue = new Queue(name, { connection: url });
  const events = new QueueEvents(name, { connection: url, ...opts });
  const opened = [queue, events];
  t.after(() => Promise.all(opened.map((thing) => thing.close(true))));
  await events.waitUntilReady();
  const worker = (processor, workerOpts = {}) => {
    const w = new Worker(name, processor, { connection: url, drainDelay: 0.1, ...workerOpts });
    opened.push(w);
    return w;
  };
  return { name, queue, events, worker };
}

/** Record [event, args] of these names. */
function record(events, names) {
  const seen = [];
  for (const name of names) events.on(name, (...args) => seen.push([name, ...args]));
  return seen;
}

test('a job\'s life as BullMQ events: added, waiting, active, progress, completed', async (t) => {
  const { queue, events, worker } = await setup(t);
  const seen = record(events, ['added', 'waiting', 'active', 'progress', 'completed', 'drained']);
  const raw = [];
  events.on('event', (event) => raw.push(event));
  const job = await queue.add('double', { n: 21 });
  worker(async (j) => {
    await j.updateProgress({ half: true });
    return { doubled: j.data.n * 2 };
  });
  await eventually(() => seen.some(([name]) => name === 'completed'), 10_000, 'completed');
  await eventually(() => seen.some(([name]) => name === 'drained'), 10_000, 'drained');
  const byName = Object.fromEntries(seen.map(([name, args]) => [name, args]));
  assert.deepEqual(byName.added, { jobId: job.id, name: 'double' });
  assert.deepEqual(byName.waiting, { jobId: job.id });
  assert.deepEqual(byName.active, { jobId: job.id, prev: 'waiting', attempt: 1 });
  assert.deepEqual(byName.progress, { jobId: job.id, data: { half: true } });
  assert.deepEqual(byName.completed, { jobId: job.id, returnvalue: { doubled: 42 }, prev: 'active', attempt: 1 });
  // The event id (second argument) is the broker's seq, increasing.
  const ids = seen.filter(([name]) => name !== 'drained').map((entry) => Number(entry[2]));
  assert.deepEqual(ids, [...ids].sort((a, b) => a - b));
  assert.ok(raw.every((event) => event.queue === queue.name && typeof event.seq === 'number'));
  assert.deepEqual(raw.map((event) => event.kind).filter((kind) => kind !== 'drained'),
    ['added', 'active', 'progress', 'completed']);
  assert.equal(events.lastSeq, raw.at(-1).seq);
});

test('failures: retrying then failed for good, delayed with its run time, stalled', async (t) => {
  const { queue, events, worker } = await setup(t);
  const seen = record(events, ['failed', 'retrying', 'delayed', 'waiting', 'retries-exhausted']);
  const job = await queue.add('boom', {}, { attempts: 2, backoff: { type: 'fixed', delay: 50 } });
  worker(async (j) => { throw new Error(`attempt ${j.attemptsMade + 1} broke`); });
  await assert.rejects(job.waitUntilFinished(events, 10_000), /^Error: Error: attempt 2 broke$/);
  const names = seen.map(([name]) => name);
  assert.deepEqual(names.filter((name) => name !== 'waiting'), ['retrying', 'delayed', 'retries-exhausted', 'failed']);
  assert.deepEqual(seen.find(([name]) => name === 'retries-exhausted')[1], { jobId: job.id, attemptsMade: 2 });
  const retrying = seen.find(([name]) => name === 'retrying')[1];
  assert.equal(retrying.failedReason, 'Error: attempt 1 broke');
  assert.equal(retrying.attemptsMade, 1);
  const delayed = seen.find(([name]) => name === 'delayed')[1];
  assert.equal(delayed.jobId, job.id);
  assert.equal(delayed.delay, retrying.runAt, 'delay is the time it runs (ms since the epoch), as BullMQ');
  assert.ok(names.indexOf('waiting', names.indexOf('delayed')) > 0, 'due again: waiting');
  assert.deepEqual(seen.find(([name]) => name === 'failed')[1],
    { jobId: job.id, failedReason: 'Error: attempt 2 broke', prev: 'active', attemptsMade: 2 });
  assert.equal(job.state, 'failed');
});

test('a lease that runs out: stalled, and failed when no attempt is left', async (t) => {
  const { queue, events } = await setup(t);
  const seen = record(events, ['stalled', 'failed', 'retries-exhausted']);
  const job = await queue.add('slow', {}, { attempts: 1, leaseMs: 200 });
  // A raw reserve that never acks: the lease expires after 200 ms.
  await queue.connection.request('reserve', { queues: [queue.name], max: 1, lease_ms: 200 });
  await assert.rejects(job.waitUntilFinished(events, 10_000), /lease expired/);
  assert.deepEqual(seen.map(([name, args]) => [name, args.jobId]),
    [['stalled', job.id], ['retries-exhausted', job.id], ['failed', job.id]]);
});

test('an UnrecoverableError with attempts left: failed, not retries-exhausted', async (t) => {
  const { queue, events, worker } = await setup(t);
  const seen = record(events, ['failed', 'retries-exhausted']);
  const job = await queue.add('fatal', {}, { attempts: 5 });
  worker(async () => { throw new UnrecoverableError('no point'); });
  await assert.rejects(job.waitUntilFinished(events, 10_000), /no point/);
  assert.deepEqual(seen.map(([name]) => name), ['failed']);
  assert.equal(seen[0][1].attemptsMade, 1);
});

test('removed, paused, resumed; delayed adds; kinds narrow the subscription', async (t) => {
  const { queue, events } = await setup(t);
  const narrow = new QueueEvents(queue.name, { connection: broker.url, kinds: ['removed'] });
  t.after(() => narrow.close());
  await narrow.waitUntilReady();
  const seen = record(events, ['added', 'delayed', 'removed', 'paused', 'resumed', 'waiting']);
  const onlyRemoved = [];
  narrow.on('event', (event) => onlyRemoved.push(event.kind));
  const later = await queue.add('later', {}, { delay: 60_000 });
  await queue.pause();
  await queue.resume();
  await later.remove();
  await eventually(() => seen.some(([name]) => name === 'removed'), 10_000, 'removed');
  assert.deepEqual(seen.map(([name]) => name), ['added', 'delayed', 'paused', 'resumed', 'removed']);
  assert.deepEqual(seen[4][1], { jobId: later.id, reason: 'cancelled' });
  assert.ok(seen[1][1].delay > Date.now() + 50_000);
  await eventually(() => onlyRemoved.length === 1, 10_000, 'the narrow subscription');
  assert.deepEqual(onlyRemoved, ['removed']);
});

test('waitUntilFinished(queueEvents): jobs finished before the call, after it, and many at once', async (t) => {
  const { queue, events, worker } = await setup(t);
  worker(async (job) => job.data * 2, { concurrency: 20 });
  const early = await queue.add('n', 1);
  await eventually(async () => (await early.getState()) === 'completed', 10_000, 'the early job');
  // Finished before anyone followed it: the read after subscribing finds it.
  assert.equal(await early.waitUntilFinished(events, 10_000), 2);
  const jobs = await queue.addBulk(Array.from({ length: 300 }, (_, i) => ({ name: 'n', data: i })));
  const results = await Promise.all(jobs.map((job) => job.waitUntilFinished(events, 30_000)));
  assert.deepEqual(results, jobs.map((_, i) => i * 2));
  assert.equal(jobs[7].state, 'completed');
  assert.equal(jobs[7].returnvalue, 14);
});

test('waitUntilFinished(queueEvents): ttl, removal, and a QueueEvents of another queue', async (t) => {
  const { queue, events } = await setup(t);
  const job = await queue.add('n', {});
  await assert.rejects(job.waitUntilFinished(events, 100), WaitTimeoutError);
  const removed = assert.rejects(job.waitUntilFinished(events, 10_000),
    (error) => error instanceof BrokerError && error.code === 'NOT_FOUND');
  await sleep(50);
  await job.remove();
  await removed;
  await assert.rejects((await queue.add('n', {})).waitUntilFinished(events, 0), WaitTimeoutError);
  // Another queue's QueueEvents cannot see this job: the broker's wait is used instead.
  const other = new QueueEvents(queueName('other'), { connection: broker.url });
  t.after(() => other.close());
  const third = await queue.add('n', {});
  await assert.rejects(third.waitUntilFinished(other, 200), /did not finish within 200 ms \(state waiting\)/);
});

test('after the connection drops: subscribes again and says lagged (dropped: null)', async (t) => {
  const { queue, events, worker } = await setup(t);
  const lagged = record(events, ['lagged']);
  const completed = record(events, ['completed']);
  const errors = [];
  events.on('error', (error) => errors.push(error));
  const firstSub = events.sub;
  events.connection.socket.destroy();
  await eventually(() => lagged.length === 1, 10_000, 'lagged after the reconnect');
  assert.deepEqual(lagged[0][1], { dropped: null });
  assert.notEqual(events.sub, firstSub);
  assert.equal(events.stats.resubscribes, 1);
  assert.match(errors[0].message, /connection lost; subscribing again/);
  worker(async () => 'after');
  const job = await queue.add('n', {});
  assert.equal(await job.waitUntilFinished(events, 10_000), 'after');
  await eventually(() => completed.length === 1, 10_000, 'completed after the reconnect');
});

test('close() unsubscribes; closing twice is safe; followers are told', async (t) => {
  const { queue, events } = await setup(t);
  const job = await queue.add('n', {});
  const waiting = assert.rejects(job.waitUntilFinished(events), /closed/);
  await sleep(50);
  await events.close();
  await events.close();
  await waiting;
  assert.equal(events.sub, null);
  await assert.rejects(events.run(), /closed/);
});

test('a subscriber too slow for the broker gets lagged; followed jobs are read again', async (t) => {
  // A broker that buffers 200 events per subscriber; the subscriber stops reading its socket.
  const small = await startBroker(['--subscription-buffer-events', '200']);
  t.after(() => small.stop());
  const { queue, events, worker } = await setup(t, {}, small.url);
  const lagged = record(events, ['lagged']);
  const followed = await queue.add('followed', 'x');
  const result = followed.waitUntilFinished(events, 60_000);
  await sleep(50);
  events.connection.socket.pause();
  // Events with long names and ids fill the kernel's socket buffers, then the broker's.
  const long = 'n'.repeat(200);
  const bulk = (from) => Array.from({ length: 1000 }, (_, i) => ({ name: long, data: null, opts: { jobId: `${long.slice(0, 190)}-${from + i}` } }));
  for (let i = 0; i < 40; i += 1) await queue.addBulk(bulk(i * 1000));
  const w = worker(async (job) => (job.name === 'followed' ? 'done' : null), { prefetch: 0 });
  await eventually(async () => (await followed.getState()) === 'completed', 10_000, 'the followed job');
  await w.pause();
  for (let i = 40; i < 42; i += 1) await queue.addBulk(bulk(i * 1000)); // push its event out
  events.connection.socket.resume();
  assert.equal(await result, 'done');
  await eventually(() => lagged.length > 0, 30_000, 'lagged');
  assert.ok(lagged[0][1].dropped > 0);
  assert.ok(events.stats.dropped >= lagged[0][1].dropped);
});
