// jobwire Node.js client bench: bulk enqueue, one-at-a-time enqueue, drain, and a raw-socket probe
// of what the broker pays per read. `npm run bench -- [--jobs N] [--url jobwire://...] [--only a,b]`.
// Without --url it starts its own `jobwire serve --sync full` (from the repository's .venv) with a
// fresh data directory. Figures are jobs per second from the first call to the last acknowledgement.
import { readFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import { parseArgs } from 'node:util';

import { parseUrl, Queue, QueueEvents, Worker } from '../dist/index.js';
import { encodeRequest, FrameDecoder } from '../dist/codec.js';
import { Broker } from '../test/broker.js';

const { values } = parseArgs({
  options: {
    jobs: { type: 'string', default: '50000' },
    url: { type: 'string' },
    only: { type: 'string' },
    repeat: { type: 'string', default: '1' },
    json: { type: 'boolean', default: false },
    'bulk-in-flight': { type: 'string', default: '2' },
  },
});
const JOBS = Number(values.jobs);
const PAYLOAD = Buffer.alloc(100, 'x'); // 100 bytes, as `jobwire bench`'s default payload
let runId = 0;
const qname = (scenario) => `bench-node-${scenario}-${process.pid}-${(runId += 1)}`;

async function bulk(url) {
  const queue = new Queue(qname('bulk'), { connection: url });
  await queue.waitUntilReady();
  const batch = Array.from({ length: 1000 }, () => ({ name: 'n', data: PAYLOAD }));
  const inFlight = Number(values['bulk-in-flight']);
  const pending = [];
  const start = performance.now();
  for (let done = 0; done < JOBS; done += 1000) {
    pending.push(queue.addBulk(batch.slice(0, Math.min(1000, JOBS - done))));
    if (pending.length >= inFlight) await pending.shift();
  }
  await Promise.all(pending);
  const seconds = (performance.now() - start) / 1000;
  const extra = { requests: queue.connection.requestsSent - 1, writes: queue.connection.writes - 1 };
  await queue.close();
  return { seconds, extra };
}

async function single(url) {
  const queue = new Queue(qname('single'), { connection: url });
  await queue.waitUntilReady();
  let issued = 0;
  const before = { requests: queue.connection.requestsSent, writes: queue.connection.writes };
  const start = performance.now();
  await Promise.all(Array.from({ length: 100 }, async () => {
    while (issued < JOBS) {
      issued += 1;
      await queue.add('n', PAYLOAD);
    }
  }));
  const seconds = (performance.now() - start) / 1000;
  const extra = {
    enqueueRequests: queue.connection.requestsSent - before.requests,
    writes: queue.connection.writes - before.writes,
  };
  await queue.close();
  return { seconds, extra };
}

/** The drain; with `withEvents`, a QueueEvents (its own connection) follows the queue meanwhile. */
async function drain(url, withEvents = false) {
  const name = qname(withEvents ? 'drain-events' : 'drain');
  const queue = new Queue(name, { connection: url });
  const batch = Array.from({ length: 1000 }, () => ({ name: 'n', data: PAYLOAD }));
  const fills = [];
  for (let done = 0; done < JOBS; done += 1000) {
    fills.push(queue.addBulk(batch.slice(0, Math.min(1000, JOBS - done))));
    if (fills.length >= 2) await fills.shift();
  }
  await Promise.all(fills);
  const worker = new Worker(name, async () => undefined, { connection: url, concurrency: 50, autorun: false, drainDelay: 1 });
  await worker.waitUntilReady();
  let events = null;
  let seen = 0;
  if (withEvents) {
    events = new QueueEvents(name, { connection: url });
    events.on('completed', () => { seen += 1; });
    await events.waitUntilReady();
  }
  let completed = 0;
  let start = 0;
  const finished = new Promise((resolve) => {
    worker.on('completed', () => {
      completed += 1;
      if (completed === JOBS) resolve(performance.now());
    });
  });
  const cpuBefore = brokerPid ? cpuSeconds(brokerPid) : null;
  start = performance.now();
  void worker.run();
  const end = await finished;
  const extra = { requests: worker.connection.requestsSent, writes: worker.connection.writes };
  if (events) {
    // The last events may still be on their way: give them a moment, then count.
    const deadline = Date.now() + 5000;
    while (seen + events.stats.dropped < JOBS && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    Object.assign(extra, { completed_events: seen, events: events.stats.events, lagged: events.stats.lagged, dropped: events.stats.dropped });
    await events.close();
  }
  if (cpuBefore !== null) extra.broker_us_per_job_drain_only = Math.round(((cpuSeconds(brokerPid) - cpuBefore) * 1e6) / JOBS);
  await worker.close();
  await queue.close();
  return { seconds: (end - start) / 1000, extra };
}

/**
 * The broker's cost per read, without this client's batching: 100 one-job `enqueue` requests in
 * flight on a raw socket, each new request sent as soon as a reply frees its slot. `split` sends
 * every frame in its own `write` (the broker gets many small reads); `joined` writes the frames
 * freed by one incoming chunk together (what any pipelined client does naturally).
 */
function rawProbe(mode) {
  return async (url) => {
    const { host, port } = parseUrl(url);
    const socket = net.connect({ host, port, noDelay: true });
    await new Promise((resolve, reject) => { socket.once('connect', resolve); socket.once('error', reject); });
    const decoder = new FrameDecoder(64 << 20);
    let nextId = 1;
    let sent = 0;
    let answered = 0;
    let writes = 0;
    const frame = () => encodeRequest(nextId++, 'enqueue', { queue: `raw-${mode}`, jobs: [[null, 'n', PAYLOAD]] });
    let done;
    const finished = new Promise((resolve) => { done = resolve; });
    const send = (count) => {
      const frames = [];
      for (let i = 0; i < count && sent < JOBS; i += 1, sent += 1) frames.push(frame());
      if (frames.length === 0) return;
      if (mode === 'split') for (const f of frames) { socket.write(f); writes += 1; }
      else { socket.write(Buffer.concat(frames)); writes += 1; }
    };
    let start = 0;
    socket.on('data', (chunk) => {
      let freed = 0;
      for (const message of decoder.feed(chunk)) {
        if (message[1] === 0) { // the hello reply: start the clock and fill the window
          start = performance.now();
          send(100);
          continue;
        }
        if (message[0] !== 1) throw new Error(`refused: ${message}`);
        answered += 1;
        freed += 1;
      }
      if (answered === JOBS) done(performance.now());
      else send(freed);
    });
    socket.write(encodeRequest(0, 'hello', { version: 1, client: 'bench-raw' }));
    const end = await finished;
    socket.destroy();
    return { seconds: (end - start) / 1000, extra: { writes } };
  };
}

/** CPU seconds (user + system) a process used so far, from /proc (Linux; clock ticks of 10 ms). */
function cpuSeconds(pid) {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return null;
  }
}

const SCENARIOS = {
  bulk: { title: `bulk enqueue, addBulk of 1,000, ${values['bulk-in-flight']} request(s) in flight`, run: bulk },
  single: { title: 'one at a time, queue.add with 100 in flight', run: single },
  drain: { title: 'drain, 1 worker at concurrency 50, no-op processor', run: (url) => drain(url) },
  'drain-events': { title: 'drain as above, while a QueueEvents follows the queue (every event kind)', run: (url) => drain(url, true) },
  'raw-split': { title: 'raw socket, 100 one-job enqueues in flight, one write per frame', run: rawProbe('split') },
  'raw-joined': { title: 'raw socket, 100 one-job enqueues in flight, frames freed together in one write', run: rawProbe('joined') },
};

const only = values.only ? values.only.split(',') : Object.keys(SCENARIOS);
let broker = null;
let brokerPid = null;
let url = values.url;
if (!url) {
  broker = await new Broker(['--sync', 'full']).start();
  url = broker.url;
  brokerPid = broker.proc.pid;
}
const results = [];
try {
  for (const key of only) {
    const scenario = SCENARIOS[key];
    if (!scenario) throw new Error(`unknown scenario ${key}; expected ${Object.keys(SCENARIOS).join(', ')}`);
    for (let i = 0; i < Number(values.repeat); i += 1) {
      const load = os.loadavg()[0];
      const cpuBefore = broker ? cpuSeconds(broker.proc.pid) : null;
      const clientBefore = process.cpuUsage();
      const { seconds, extra } = await scenario.run(url);
      const clientCpu = process.cpuUsage(clientBefore);
      const cpuAfter = broker ? cpuSeconds(broker.proc.pid) : null;
      extra.client_us_per_job = Math.round((clientCpu.user + clientCpu.system) / JOBS);
      const rate = Math.round(JOBS / seconds);
      // Broker CPU per job over the whole scenario (the drain's untimed fill included).
      if (cpuBefore !== null && cpuAfter !== null) extra.broker_us_per_job = Math.round(((cpuAfter - cpuBefore) * 1e6) / JOBS);
      results.push({ scenario: key, jobs: JOBS, seconds: Number(seconds.toFixed(3)), jobs_per_s: rate, load1: Number(load.toFixed(2)), ...extra });
      if (!values.json) {
        process.stdout.write(`${key.padEnd(10)} ${String(rate).padStart(7)} jobs/s  ${seconds.toFixed(2)} s  load ${load.toFixed(2)}  ${JSON.stringify(extra)}  (${scenario.title})\n`);
      }
    }
  }
} finally {
  await broker?.stop();
}
if (values.json) process.stdout.write(`${JSON.stringify({ node: process.version, cpus: os.cpus().length, sync: values.url ? null : 'full', results }, null, 2)}\n`);
