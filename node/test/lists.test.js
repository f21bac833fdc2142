// getJobs over list_jobs, obliterate, and job ids scoped per queue, against a real broker.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { BrokerError, Queue, Worker } from '../dist/index.js';
import { eventually, queueName, startBroker } from './broker.js';

let broker;
before(async () => { broker = await startBroker(); });
after(async () => { await broker.stop(); });

function setup(t) {
  const opened = [];
  t.after(() => Promise.all(opened.map((thing) => thing.close())));
  const queue = (name = queueName('ls')) => {
    const q = new Queue(name, { connection: broker.url });
    opened.push(q);
    return q;
  };
  const worker = (name, processor, opts = {}) => {
    const w = new Worker(name, processor, { connection: broker.url, drainDelay: 0.1, ...opts });
    opened.push(w);
    return w;
  };
  return { queue, worker };
}

const names = (jobs) => jobs.map((job) => job.name);

test('getJobs: each state in BullMQ\'s direction, ranges across states, asc', async (t) => {
  const { queue, worker } = setup(t);
  const q = queue();
  // Five completed (c0 first), two failed, three waiting (w0 runs first), two delayed.
  await q.addBulk(['c0', 'c1', 'c2', 'c3', 'c4', 'f0', 'f1'].map((name) => ({ name, data: name, opts: { attempts: 1 } })));
  const w = worker(q.name, async (job) => { if (job.name.startsWith('f')) throw new Error(job.name); });
  await eventually(async () => (await q.getJobCountByTypes('completed', 'failed')) === 7, 10_000, 'seven finished');
  await w.close();
  await q.addBulk(['w0', 'w1', 'w2'].map((name) => ({ name, data: name })));
  await q.add('d1', null, { delay: 120_000 });
  await q.add('d0', null, { delay: 60_000 });

  assert.deepEqual(names(await q.getCompleted()), ['c4', 'c3', 'c2', 'c1', 'c0'], 'last finished first');
  assert.deepEqual(names(await q.getCompleted(1, 2)), ['c3', 'c2']);
  assert.deepEqual(names(await q.getJobs('completed', 0, 1, true)), ['c0', 'c1'], 'asc: first finished first');
  assert.deepEqual(names(await q.getWaiting()), ['w0', 'w1', 'w2'], 'run order');
  assert.deepEqual(names(await q.getJobs(['waiting'])), ['w2', 'w1', 'w0'], 'BullMQ default: newest first');
  assert.deepEqual(names(await q.getDelayed()), ['d0', 'd1'], 'next due first');
  assert.deepEqual(names(await q.getFailed()), ['f1', 'f0']);
  assert.equal((await q.getFailed())[0].failedReason, 'Error: f1');
  // Several types: their lists one after the other, the range over the whole sequence.
  assert.deepEqual(names(await q.getJobs(['failed', 'waiting'], 0, -1, true)), ['f0', 'f1', 'w0', 'w1', 'w2']);
  assert.deepEqual(names(await q.getJobs(['failed', 'waiting'], 1, 3, true)), ['f1', 'w0', 'w1']);
  assert.deepEqual(names(await q.getJobs(['waiting', 'completed'], 2, 4)), ['w0', 'c4', 'c3']);
  assert.deepEqual(names(await q.getJobs(['delayed', 'wait'], 0, -1, true)), ['d0', 'd1', 'w0', 'w1', 'w2']);
  // Every type (none named): each job once.
  const all = await q.getJobs();
  assert.equal(all.length, 12);
  assert.equal(new Set(all.map((job) => job.id)).size, 12);
  const counts = await q.getJobCounts();
  assert.equal(Object.values(counts).reduce((a, b) => a + b, 0), all.length, 'counts and lists agree');
  // The jobs are complete Job objects.
  const [c4] = await q.getCompleted(0, 0);
  assert.equal(c4.state, 'completed');
  assert.equal(c4.data, 'c4');
  assert.equal(c4.queueName, q.name);
  assert.deepEqual(await q.getJobs(['prioritized', 'waiting-children']), []);
  assert.deepEqual(await q.getJobs('completed', 5, 10), []);
});

test('getJobs: active jobs, and a paused queue\'s waiting jobs are `paused` as in getJobCounts', async (t) => {
  const { queue, worker } = setup(t);
  const q = queue();
  await q.addBulk([{ name: 'a', data: 1 }, { name: 'b', data: 2 }, { name: 'c', data: 3 }]);
  let release;
  const gate = new Promise((resolve) => { release = resolve; });
  worker(q.name, async () => gate, { concurrency: 2, prefetch: 0 });
  await eventually(async () => (await q.getActiveCount()) === 2, 10_000, 'two active');
  const active = await q.getActive();
  assert.deepEqual(names(active).sort(), ['a', 'b']);
  assert.ok(active.every((job) => job.state === 'active' && job.leaseDeadline > Date.now() - 60_000));
  await q.pause();
  assert.deepEqual(await q.getJobCounts('waiting', 'paused'), { waiting: 0, paused: 1 });
  assert.deepEqual(names(await q.getJobs('waiting')), []);
  assert.deepEqual(names(await q.getJobs('paused')), ['c']);
  await q.resume();
  assert.deepEqual(names(await q.getWaiting()), ['c']);
  release();
});

test('getJobs pages past the broker\'s 1,000 per reply', async (t) => {
  const { queue } = setup(t);
  const q = queue();
  await q.addBulk(Array.from({ length: 2500 }, (_, i) => ({ name: `n${i}`, data: i })));
  const waiting = await q.getWaiting();
  assert.equal(waiting.length, 2500);
  assert.deepEqual(waiting.map((job) => job.data), Array.from({ length: 2500 }, (_, i) => i));
  const middle = await q.getWaiting(999, 1001);
  assert.deepEqual(middle.map((job) => job.data), [999, 1000, 1001]);
  const newest = await q.getJobs('waiting', 0, 1200);
  assert.equal(newest.length, 1201);
  assert.equal(newest[0].data, 2499);
  assert.equal(newest.at(-1).data, 1299);
});

test('obliterate: refused with active jobs, then with force everything goes', async (t) => {
  const { queue, worker } = setup(t);
  const q = queue();
  await q.addBulk(Array.from({ length: 5 }, (_, i) => ({ name: 'n', data: i })));
  await q.add('later', {}, { delay: 60_000 });
  await q.pause();
  let release;
  const gate = new Promise((resolve) => { release = resolve; });
  const w = worker(q.name, () => gate, { prefetch: 0 }); // holds its job until released
  await q.resume();
  await eventually(async () => (await q.getActiveCount()) === 1, 10_000, 'one active');
  await assert.rejects(q.obliterate(), (error) => error instanceof BrokerError && error.code === 'CONFLICT');
  assert.equal(await q.count(), 5, 'nothing changed');
  assert.equal(await q.obliterate({ force: true }), 6);
  assert.deepEqual(await q.getJobCounts('waiting', 'delayed', 'active', 'completed', 'failed'),
    { waiting: 0, delayed: 0, active: 0, completed: 0, failed: 0 });
  assert.equal(await q.isPaused(), false);
  const stats = await q.connection.request('stats', {});
  assert.equal(stats.queues[q.name], undefined, 'the queue itself is gone');
  assert.equal(await queue(queueName('never')).obliterate(), 0, 'an unknown queue: nothing to remove');
  release('late');
  await eventually(() => w.stats.staleOutcomes === 1, 10_000, 'the ack of an obliterated job refused');
});

test('user job ids are per queue: getJob, remove, waitUntilFinished address their own queue', async (t) => {
  const { queue, worker } = setup(t);
  const a = queue();
  const b = queue();
  const ja = await a.add('n', 'in a', { jobId: 'shared-id' });
  const jb = await b.add('n', 'in b', { jobId: 'shared-id' });
  assert.equal(ja.duplicate, false);
  assert.equal(jb.duplicate, false, 'the same id in another queue is another job');
  assert.equal((await a.getJob('shared-id')).data, 'in a');
  assert.equal((await b.getJob('shared-id')).data, 'in b');
  // Without a queue the broker cannot tell which job is meant.
  await assert.rejects(a.connection.request('get', { id: 'shared-id' }),
    (error) => error instanceof BrokerError && error.code === 'AMBIGUOUS_ID');
  assert.equal(await ja.getState(), 'waiting');
  worker(b.name, async (job) => `done ${job.data}`);
  assert.equal(await jb.waitUntilFinished(undefined, 10_000), 'done in b');
  assert.equal(await ja.getState(), 'waiting', 'the job of the other queue is untouched');
  await ja.remove();
  assert.equal(await a.getJob('shared-id'), undefined);
  assert.equal(await jb.getState(), 'completed');
  assert.equal(await b.remove('shared-id'), 1);
  assert.equal(await b.remove('shared-id'), 0);
});

test('adding an existing jobId returns the stored job, marked duplicate', async (t) => {
  const { queue } = setup(t);
  const q = queue();
  const first = await q.add('first-name', { v: 1 }, { jobId: 'same', priority: 4 });
  const again = await q.add('second-name', { v: 2 }, { jobId: 'same' });
  assert.equal(again.duplicate, true);
  assert.equal(again.id, 'same');
  assert.equal(again.name, 'first-name');
  assert.deepEqual(again.data, { v: 1 });
  assert.equal(again.state, 'waiting');
  assert.equal(again.priority, 4);
  const [bulkNew, bulkDup] = await q.addBulk([
    { name: 'x', data: 'new', opts: { jobId: 'other' } }, { name: 'y', data: 'dup', opts: { jobId: 'same' } },
  ]);
  assert.deepEqual([bulkNew.duplicate, bulkNew.data], [false, 'new']);
  assert.deepEqual([bulkDup.duplicate, bulkDup.data], [true, { v: 1 }]);
  assert.equal(first.duplicate, false);
  assert.equal(await q.count(), 2);
});
