// jobwires:// against a broker serving TLS, with certificates made at test time (trustme).
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';

import { Connection, ConnectionLostError, Queue, Worker } from '../dist/index.js';
import { Broker, PYTHON, queueName } from './broker.js';

const dir = mkdtempSync(join(tmpdir(), 'jobwire-node-tls-'));
const file = (name) => join(dir, name);
let broker;
let ca;

before(async () => {
  await promisify(execFile)(PYTHON, [join(import.meta.dirname, 'python', 'make_certs.py'), dir]);
  ca = readFileSync(file('ca.pem'));
  broker = await new Broker(['--tls-cert', file('server.pem'), '--tls-key', file('server.key'),
    '--tls-client-ca', file('ca.pem')]).start();
});
after(async () => {
  await broker.stop();
  rmSync(dir, { recursive: true, force: true });
});

test('jobwires:// with the CA and a client certificate: a job goes through', async () => {
  const tls = { ca, cert: readFileSync(file('client.pem')), key: readFileSync(file('client.key')) };
  const connection = { url: `jobwires://127.0.0.1:${broker.port}`, tls };
  const name = queueName('tls');
  const queue = new Queue(name, { connection });
  const worker = new Worker(name, async (job) => job.data * 2, { connection, drainDelay: 0.2 });
  const job = await queue.add('n', 21);
  assert.equal(await job.waitUntilFinished(undefined, 10_000), 42);
  await worker.close();
  await queue.close();
});

test('an untrusted broker certificate is refused, and the error says why', async () => {
  const connection = new Connection({ url: `jobwires://127.0.0.1:${broker.port}`, offlineTimeoutMs: 500, reconnectMaxMs: 100 });
  await assert.rejects(connection.request('ping'), (error) => error instanceof ConnectionLostError
    && /last attempt: .*(certificate|self.signed)/i.test(error.message));
  await connection.close();
});
