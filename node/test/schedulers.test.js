// Job schedulers (repeatable jobs) against a real broker: upsertJobScheduler, getJobScheduler(s),
// removeJobScheduler (SPEC §8.25-8.27).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { BrokerError, Queue, Worker } from '../dist/index.js';
import { eventually, queueName, startBroker } from './broker.js';

let broker;
before(async () => { broker = await startBroker(); });
after(async () => { await broker.stop(); });

function newQueue(t) {
  const queue = new Queue(queueName('sched'), { connection: broker.url });
  t.after(() => queue.close());
  return queue;
}

const isBadArgument = (field) => (error) => {
  assert.ok(error instanceof BrokerError, `expected a BrokerError, got ${error}`);
  assert.equal(error.code, 'BAD_ARGUMENT');
  assert.match(error.message, new RegExp(`^BAD_ARGUMENT: ${field}`));
  return true;
};

test('upsert twice makes one scheduler; its runs are jobs a Node worker completes; remove stops it', async (t) => {
  const queue = newQueue(t);
  const template = { name: 'tick', data: { n: 1 }, opts: { attempts: 2, removeOnComplete: false } };
  const first = await queue.upsertJobScheduler('every-200', { every: 200 }, template);
  const again = await queue.upsertJobScheduler('every-200', { every: 200 }, template);
  assert.match(first.id, /^repeat:every-200:\d+$/);
  // The first run is due at once, so the broker may have moved on to the next one in between;
  // the same definition again keeps the anchor: every run is at anchor + k * 200 ms.
  const runMs = (id) => Number(id.split(':')[2]);
  const anchor = runMs(first.id);
  assert.equal((runMs(again.id) - anchor) % 200, 0);
  assert.equal(first.name, 'tick');
  assert.deepEqual(first.data, { n: 1 });
  const schedulers = await queue.getJobSchedulers();
  assert.equal(schedulers.length, 1);
  assert.equal(await queue.getJobSchedulersCount(), 1);
  assert.equal(schedulers[0].key, 'every-200');
  assert.equal(schedulers[0].every, 200);
  assert.equal(schedulers[0].pattern, undefined);

  const done = [];
  const worker = new Worker(queue.name, async (job) => {
    done.push({ id: job.id, name: job.name, data: job.data, maxAttempts: job.maxAttempts });
    return job.data.n + 1;
  }, { connection: broker.url, drainDelay: 0.1 });
  t.after(() => worker.close(true));
  await eventually(() => done.length >= 2, 20_000, 'two runs completed');
  assert.ok(done.every((run) => run.name === 'tick' && run.data.n === 1 && run.maxAttempts === 2));
  assert.match(done[0].id, /^repeat:every-200:\d+$/);
  assert.equal(new Set(done.map((run) => run.id)).size, done.length, 'one job per run');
  assert.ok(done.every((run) => (runMs(run.id) - anchor) % 200 === 0), 'runs of the one definition');
  const completed = await queue.getJob(done[0].id);
  assert.equal(completed.state, 'completed');
  assert.equal(completed.returnvalue, 2);

  assert.equal(await queue.removeJobScheduler('every-200'), true);
  assert.equal(await queue.removeJobScheduler('every-200'), false, 'gone');
  assert.deepEqual(await queue.getJobSchedulers(), []);
  assert.equal(await queue.getJobScheduler('every-200'), undefined);
  await worker.close();
  // The pending run's job was deleted with the scheduler; nothing makes another one.
  const left = await queue.getJobs(['waiting', 'delayed']);
  assert.deepEqual(left.map((job) => job.id), []);
});

test('a cron scheduler: pattern, tz, dates, limit and template options read back', async (t) => {
  const queue = newQueue(t);
  const start = Date.UTC(2030, 0, 1);
  const end = Date.UTC(2031, 0, 1);
  const job = await queue.upsertJobScheduler('berlin-9am', {
    pattern: '0 9 * * *', tz: 'Europe/Berlin', startDate: new Date(start), endDate: end, limit: 5,
  }, {
    name: 'report', data: { kind: 'daily' },
    opts: { priority: 3, attempts: 4, backoff: { type: 'fixed', delay: 500 }, removeOnFail: { count: 10, age: 60 }, timeout: 9000 },
  });
  // 09:00 in Berlin on 1 January 2030 is 08:00 UTC (winter time).
  assert.equal(job.id, `repeat:berlin-9am:${Date.UTC(2030, 0, 1, 8)}`);
  const scheduler = await queue.getJobScheduler('berlin-9am');
  assert.deepEqual(scheduler, {
    key: 'berlin-9am', name: 'report', iterationCount: 1, limit: 5, pattern: '0 9 * * *',
    tz: 'Europe/Berlin', startDate: start, endDate: end, next: Date.UTC(2030, 0, 1, 8),
    nextJobId: job.id, createdAt: scheduler.createdAt,
    template: {
      data: { kind: 'daily' },
      opts: { priority: 3, attempts: 4, backoff: { type: 'fixed', delay: 500 }, removeOnFail: { count: 10, age: 60 }, timeout: 9000 },
    },
  });
  const delayed = await queue.getJob(job.id);
  assert.equal(delayed.state, 'delayed');
  assert.equal(delayed.priority, 3);
  assert.equal(delayed.maxAttempts, 4);
});

test('a changed definition replaces the pending run; limit ends the runs', async (t) => {
  const queue = newQueue(t);
  const far = Date.now() + 3_600_000;
  const before = await queue.upsertJobScheduler('s', { every: 60_000, startDate: far });
  const changed = await queue.upsertJobScheduler('s', { every: 30_000, startDate: far + 1000 });
  assert.notEqual(changed.id, before.id);
  assert.equal(await queue.getJob(before.id), undefined, 'the replaced run\'s job was deleted');
  assert.equal((await queue.getJobSchedulers()).length, 1);

  await queue.upsertJobScheduler('twice', { every: 50, limit: 2 }, { data: 'x' });
  const ended = await eventually(async () => {
    const s = await queue.getJobScheduler('twice');
    return s.next === undefined ? s : null;
  }, 20_000, 'the limit reached');
  assert.equal(ended.iterationCount, 2);
  assert.equal(ended.name, 'twice', 'the name defaults to the scheduler id');
  const runs = await queue.getJobs(['waiting', 'delayed']);
  assert.equal(runs.filter((job) => job.id.startsWith('repeat:twice:')).length, 2);
  assert.equal(await queue.upsertJobScheduler('twice', { every: 50, limit: 2 }, { data: 'x' }), undefined,
    'no run left: no job');
});

test('getJobSchedulers orders by next run, pages with start/end, asc', async (t) => {
  const queue = newQueue(t);
  const base = Date.now() + 3_600_000;
  for (const [key, offset] of [['b', 2], ['a', 3], ['c', 1]]) {
    await queue.upsertJobScheduler(key, { every: 86_400_000, startDate: base + offset * 1000 });
  }
  assert.deepEqual((await queue.getJobSchedulers()).map((s) => s.key), ['a', 'b', 'c']);
  assert.deepEqual((await queue.getJobSchedulers(0, -1, true)).map((s) => s.key), ['c', 'b', 'a']);
  assert.deepEqual((await queue.getJobSchedulers(1, 1, true)).map((s) => s.key), ['b']);
  assert.equal(await queue.getJobSchedulersCount(), 3);
});

test('bad definitions are the broker\'s BAD_ARGUMENT naming the field; unsupported options a TypeError', async (t) => {
  const queue = newQueue(t);
  await assert.rejects(queue.upsertJobScheduler('x', { pattern: 'not a cron' }), isBadArgument('cron'));
  await assert.rejects(queue.upsertJobScheduler('x', { pattern: '0 0 30 2 *' }), isBadArgument('cron'));
  await assert.rejects(queue.upsertJobScheduler('x', { every: 1000, pattern: '* * * * *' }), isBadArgument('every_ms'));
  await assert.rejects(queue.upsertJobScheduler('x', {}), isBadArgument('every_ms'));
  await assert.rejects(queue.upsertJobScheduler('x', { every: 0 }), isBadArgument('every_ms'));
  await assert.rejects(queue.upsertJobScheduler('x', { pattern: '* * * * *', tz: 'Mars/Olympus' }), isBadArgument('tz'));
  await assert.rejects(queue.upsertJobScheduler('x', { every: 1000, startDate: 2000, endDate: 1000 }), isBadArgument('end_ms'));
  await assert.rejects(queue.upsertJobScheduler('x', { every: 1000, limit: 0 }), isBadArgument('limit'));
  await assert.rejects(queue.upsertJobScheduler('x', { every: 1000 }, { opts: { jobId: 'mine' } }), TypeError);
  await assert.rejects(queue.upsertJobScheduler('x', { every: 1000 }, { opts: { delay: 5 } }), TypeError);
  await assert.rejects(queue.upsertJobScheduler('x', { every: 1000, offset: 5 }), TypeError);
  await assert.rejects(queue.upsertJobScheduler('x', { every: 1000, startDate: 'tomorrow-ish' }), TypeError);
  assert.deepEqual(await queue.getJobSchedulers(), [], 'nothing was made');
  // `repeat` on add points at schedulers.
  await assert.rejects(queue.add('x', {}, { repeat: { every: 1000 } }), /upsertJobScheduler/);
});
