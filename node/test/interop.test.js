// Interoperability with the Python client, both ways, payloads in msgpack:
// a Node producer with a Python worker (`jobwire worker`), and a Python producer with a Node worker.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { after, before, test } from 'node:test';

import { Queue, QueueEvents, Worker } from '../dist/index.js';
import { eventually, JOBWIRE, PYTHON, queueName, startBroker } from './broker.js';

const PY_DIR = join(import.meta.dirname ?? new URL('.', import.meta.url).pathname, 'python');

let broker;
before(async () => { broker = await startBroker(); });
after(async () => { await broker.stop(); });

function run(command, args) {
  const child = spawn(command, args, { cwd: PY_DIR, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk) => { stdout += chunk; });
  child.stderr.on('data', (chunk) => { stderr += chunk; });
  const done = new Promise((resolve) => child.on('exit', (code) => resolve({ code, stdout, stderr })));
  return { child, done };
}

test('Node producer → Python worker: JS values arrive as the documented Python types', async () => {
  const name = queueName('interop-py-worker');
  const worker = run(JOBWIRE, ['worker', 'interop_handlers:handlers', '--queue', name, '--url', broker.url,
    '--concurrency', '2', '--log-level', 'warning']);
  const queue = new Queue(name, { connection: broker.url });
  // The Python worker's outcome as a Node QueueEvents sees it (the broker's event stream).
  const events = new QueueEvents(name, { connection: broker.url });
  const completed = [];
  events.on('completed', (args) => completed.push(args));
  await events.waitUntilReady();
  try {
    const data = {
      int: 7, big: 2 ** 40, negative: -(2 ** 40), bigint: 2n ** 60n, float: 1.5, text: 'héllo',
      raw: Buffer.from([0, 1, 255]), none: null, flag: true, items: [1, 'two', 3.5],
      nested: { a: { b: [null] } }, when: new Date(1_767_225_600_000), dropped: undefined,
    };
    const job = await queue.add('describe', data);
    const result = await job.waitUntilFinished(events, 30_000);
    await eventually(() => completed.length === 1, 10_000, 'the completed event');
    assert.equal(completed[0].jobId, job.id);
    assert.deepEqual(completed[0].returnvalue, result, 'the event carries the result Python returned');
    assert.deepEqual(result.types, {
      int: 'int', big: 'int', negative: 'int', bigint: 'int', float: 'float', text: 'str',
      raw: 'bytes', none: 'NoneType', flag: 'bool', items: ['int', 'str', 'float'],
      nested: { a: { b: ['NoneType'] } }, when: 'Timestamp',
    });
    // And back: Python's values as JavaScript sees them.
    assert.deepEqual(result.echo, {
      int: 7, big: 2 ** 40, negative: -(2 ** 40), bigint: 2n ** 60n, float: 1.5, text: 'héllo',
      raw: Buffer.from([0, 1, 255]), none: null, flag: true, items: [1, 'two', 3.5],
      nested: { a: { b: [null] } },
    });
    assert.equal(result.attempt, 1);
  } finally {
    worker.child.kill('SIGTERM');
    const { code, stderr } = await worker.done;
    assert.equal(code, 0, stderr);
    await Promise.all([queue.close(), events.close()]);
  }
});

test('Python producer → Node worker: Python values arrive as the documented JS types', async () => {
  const name = queueName('interop-node-worker');
  const seen = [];
  const worker = new Worker(name, async (job) => {
    seen.push(job.data);
    const types = Object.fromEntries(Object.entries(job.data).map(([key, value]) => [key,
      value === null ? 'null' : Buffer.isBuffer(value) ? 'Buffer' : Array.isArray(value) ? 'array' : typeof value]));
    return { types, name: job.name, sum: BigInt(job.data.big) + 1n };
  }, { connection: broker.url, drainDelay: 0.2 });
  try {
    const producer = run(PYTHON, ['produce.py', broker.url, name]);
    const { code, stdout, stderr } = await producer.done;
    assert.equal(code, 0, stderr);
    const answer = JSON.parse(stdout);
    // The Node worker's result, decoded by Python's msgpack: a dict with ints.
    assert.equal(answer.result, "{'types': {'int': 'number', 'big': 'number', 'huge': 'bigint', " +
      "'negative': 'number', 'float': 'number', 'text': 'string', 'raw': 'Buffer', 'none': 'null', " +
      "'flag': 'boolean', 'items': 'array', 'nested': 'object'}, 'name': 'inspect', 'sum': 1099511627777}");
    assert.equal(seen.length, 1);
    assert.deepEqual(seen[0], {
      int: 7, big: 2 ** 40, huge: 2n ** 60n, negative: -(2 ** 40), float: 1.5, text: 'héllo',
      raw: Buffer.from([0, 1, 255]), none: null, flag: true, items: [1, 'two', 3], nested: { a: { b: [null] } },
    });
  } finally {
    await worker.close();
  }
});
