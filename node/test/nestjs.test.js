// The NestJS module and the example app (examples/message-requests, compiled to build/):
// an HTTP request enqueues, a @Processor completes the job, the CLI sees the same job.
import 'reflect-metadata';
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { NestFactory } from '@nestjs/core';

import { eventually, startBroker } from './broker.js';

let broker;
let app;
let base;
let modules;

before(async () => {
  broker = await startBroker();
  process.env.JOBWIRE_URL = broker.url; // read by the example's AppModule
  modules = {
    app: await import('../build/examples/message-requests/app.module.js'),
    processor: await import('../build/examples/message-requests/message-request.processor.js'),
    events: await import('../build/examples/message-requests/message-request.events.js'),
    nest: await import('jobwire/nestjs'),
  };
  app = await NestFactory.create(modules.app.AppModule, { logger: false });
  app.enableShutdownHooks();
  await app.listen(0, '127.0.0.1');
  base = `${await app.getUrl()}/message-requests`;
  // The listener subscribes as the application starts; events come from then on.
  await app.get(modules.events.MessageRequestEvents).queueEvents.waitUntilReady();
});

after(async () => {
  await app?.close();
  await broker.stop();
});

async function post(path, body, headers = {}) {
  const response = await fetch(`${base}${path}`, {
    method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body),
  });
  return { status: response.status, body: await response.json() };
}

test('the controller enqueues and returns the job id; the processor completes it', async () => {
  const created = await post('/async', { channel: 'general', text: 'hello' }, { 'x-tenant': 'acme', 'x-user-id': 'u1' });
  assert.equal(created.status, 201);
  assert.equal(created.body.message, 'Message request queued for processing');
  const { jobId } = created.body;
  const job = await eventually(async () => {
    const answer = await (await fetch(`${base}/jobs/${jobId}`)).json();
    return answer.state === 'completed' ? answer : null;
  }, 15_000, 'the job completed');
  assert.equal(job.name, 'create-message-request');
  assert.equal(job.returnvalue.channel, 'general');
  assert.match(job.returnvalue.messageRequestId, /^mr-acme-/);
  const processor = app.get(modules.processor.MessageRequestProcessor);
  assert.ok(processor.completed >= 1, '@OnWorkerEvent("completed") ran');
  assert.equal(processor.worker.concurrency, 5, '@Processor options reach the Worker');
  const listener = app.get(modules.events.MessageRequestEvents);
  await eventually(() => listener.completedIds.includes(jobId), 10_000, '@OnQueueEvent("completed")');
  assert.equal(listener.queueEvents.name, 'MessageRequestQueue');

  // The same job, seen by the Python CLI.
  const shown = JSON.parse(await broker.cli('job', jobId, '--json'));
  assert.equal(shown.state, 'completed');
  assert.equal(shown.queue, 'MessageRequestQueue');
  assert.equal(shown.max_attempts, 3, 'registerQueue defaultJobOptions applied');
  assert.match(await broker.cli('stats'), /MessageRequestQueue\s+0\s+0\s+0\s+\d+/);
});

test('an idempotency key gives the same job; the send job reports progress', async () => {
  const first = await post('/async', { channel: 'c', text: 't', idempotencyKey: 'req-42' });
  const again = await post('/async', { channel: 'c', text: 't', idempotencyKey: 'req-42' });
  assert.equal(first.body.jobId, 'create-req-42');
  assert.equal(again.body.jobId, 'create-req-42');
  const sent = await post('/mr-1/send', {});
  const job = await eventually(async () => {
    const answer = await (await fetch(`${base}/jobs/${sent.body.jobId}`)).json();
    return answer.state === 'completed' ? answer : null;
  }, 15_000, 'the send job completed');
  assert.deepEqual(job.returnvalue, { sent: true, messageRequestId: 'mr-1' });
});

test('a failing job fires @OnWorkerEvent("failed") and is retried with backoff', async () => {
  const processor = app.get(modules.processor.MessageRequestProcessor);
  const before = processor.failed;
  const created = await post('/async', { channel: 'c', text: 'please fail' });
  await eventually(() => processor.failed > before, 15_000, 'the failed event');
  const job = await (await fetch(`${base}/jobs/${created.body.jobId}`)).json();
  assert.equal(job.state, 'delayed', 'exponential backoff of 2 s before the next attempt');
  assert.equal(job.attemptsMade, 1);
  assert.match(job.failedReason, /rejected by validation/);
});

test('the stats endpoint reports the queue counts', async () => {
  const stats = await (await fetch(`${base}/stats`)).json();
  assert.deepEqual(Object.keys(stats).sort(), ['active', 'completed', 'delayed', 'failed', 'waiting']);
  assert.ok(stats.completed >= 2);
});

test('@InjectQueue resolves the registered Queue; getQueueToken names it', async () => {
  const queue = app.get(modules.nest.getQueueToken('MessageRequestQueue'));
  assert.equal(queue.name, 'MessageRequestQueue');
  assert.deepEqual(queue.defaultJobOptions.backoff, { type: 'exponential', delay: 2000 });
});
