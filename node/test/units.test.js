// Pure tests: the codec, the payload rules, URLs and job options. No broker.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { Packr, Unpackr } from 'msgpackr';

import { encodeRequest, FrameDecoder, wireInt } from '../dist/codec.js';
import { buildSpec } from '../dist/options.js';
import { msgpackSerializer, toProgressValue } from '../dist/serializer.js';
import { parseUrl, reconnectDelay } from '../dist/url.js';

const raw = new Unpackr({ useRecords: false, mapsAsObjects: true, int64AsType: 'bigint' });

function body(frame) {
  assert.equal(frame.readUInt32BE(0), frame.length - 4);
  return frame.subarray(4);
}

test('lease tokens up to 2^64-1 go out as uint64, never float64', () => {
  for (const token of [2n ** 53n + 1n, 2n ** 63n, 2n ** 64n - 1n]) {
    const frame = encodeRequest(7, 'ack', { items: [['1', token]] });
    const bytes = body(frame);
    assert.ok(!bytes.includes(0xcb), 'no float64 in the frame');
    assert.deepEqual(raw.unpack(bytes), [0, 7, 'ack', { items: [['1', token]] }]);
  }
  const top = body(encodeRequest(1, 'ack', { items: [['1', 2n ** 64n - 1n]] }));
  assert.ok(top.includes(0xcf), 'a token above 2^63 is a uint64');
});

test('wireInt keeps 32-bit numbers and makes larger ones bigints', () => {
  assert.equal(wireInt(5, 'x'), 5);
  assert.equal(wireInt(0xffffffff, 'x'), 0xffffffff);
  assert.equal(wireInt(1_767_225_600_000, 'x'), 1_767_225_600_000n);
  assert.throws(() => wireInt(1.5, 'delay'), /delay: expected an integer/);
  // msgpackr alone would write a float64 for this time: the trap wireInt exists for.
  assert.ok(new Packr({ useRecords: false }).pack(1_767_225_600_000).includes(0xcb));
  assert.ok(!body(encodeRequest(1, 'x', { t: wireInt(1_767_225_600_000, 't') })).includes(0xcb));
});

test('the frame decoder gives the same messages for any split of the stream', () => {
  const frames = Buffer.concat([
    encodeRequest(1, 'hello', { version: 1 }),
    encodeRequest(2, 'enqueue', { queue: 'q', jobs: [[null, 'n', Buffer.from('payload')]] }),
    encodeRequest(3, 'ack', { items: [['1', 2n ** 63n + 5n]] }),
  ]);
  const whole = new FrameDecoder(1 << 20).feed(frames);
  assert.equal(whole.length, 3);
  const decoder = new FrameDecoder(1 << 20);
  const byteByByte = [];
  for (let i = 0; i < frames.length; i += 1) byteByByte.push(...decoder.feed(frames.subarray(i, i + 1)));
  assert.deepEqual(byteByByte, whole);
  assert.equal(whole[2][3].items[0][1], 2n ** 63n + 5n);
});

test('the frame decoder refuses a zero or oversized length prefix', () => {
  assert.throws(() => new FrameDecoder(100).feed(Buffer.from([0, 0, 0, 0])), /frame of 0 bytes/);
  assert.throws(() => new FrameDecoder(100).feed(Buffer.from([0, 0, 1, 0])), /frame of 256 bytes/);
});

test('payloads: wide integers stay integers, undefined properties are dropped', () => {
  const bytes = msgpackSerializer.serialize({ at: 1_767_225_600_000, n: -(2 ** 40), small: 3, gone: undefined, f: 0.5 });
  const decoded = raw.unpack(bytes);
  assert.deepEqual(Object.keys(decoded).sort(), ['at', 'f', 'n', 'small']);
  assert.equal(decoded.at, 1_767_225_600_000n, 'an int64, not a float');
  assert.deepEqual(msgpackSerializer.deserialize(bytes), { at: 1_767_225_600_000, n: -(2 ** 40), small: 3, f: 0.5 });
  // Beyond 2^53 a decoded integer is a bigint; BigInt values round-trip.
  assert.deepEqual(msgpackSerializer.deserialize(msgpackSerializer.serialize({ big: 2n ** 60n })), { big: 2n ** 60n });
  // Dates and Buffers round-trip in JavaScript.
  const value = { when: new Date(1_767_225_600_123), raw: Buffer.from([0, 1, 255]) };
  const back = msgpackSerializer.deserialize(msgpackSerializer.serialize(value));
  assert.equal(back.when.getTime(), value.when.getTime());
  assert.deepEqual(Buffer.from(back.raw), value.raw);
  assert.equal(msgpackSerializer.deserialize(msgpackSerializer.serialize(undefined)), null);
});

test('progress values become plain msgpack: Dates as ISO text, Maps as objects', () => {
  assert.deepEqual(toProgressValue({ at: new Date(0), m: new Map([[1, 'a']]), u: undefined, n: 2 ** 40 }),
    { at: '1970-01-01T00:00:00.000Z', m: { 1: 'a' }, n: 2n ** 40n });
  assert.throws(() => toProgressValue({ f: () => 1 }), /cannot send a function/);
  let deep = 1;
  for (let i = 0; i < 40; i += 1) deep = [deep];
  assert.throws(() => toProgressValue(deep), /32 levels/);
});

test('URLs: token, host, port, percent-encoding, refused schemes', () => {
  assert.deepEqual(parseUrl('jobwire://127.0.0.1:7499'), { host: '127.0.0.1', port: 7499 });
  assert.deepEqual(parseUrl('jobwire://s3cret@broker:7401'), { host: 'broker', port: 7401, token: 's3cret' });
  assert.deepEqual(parseUrl('jobwire://user:p%40ss%3Aw%2Fd@h'), { host: 'h', port: 7400, token: 'p@ss:w/d' });
  assert.deepEqual(parseUrl('localhost:9000'), { host: 'localhost', port: 9000 });
  assert.throws(() => parseUrl('redis://x:6379'), /unsupported URL scheme/);
  assert.deepEqual(parseUrl('jobwires://t@x:1'), { host: 'x', port: 1, token: 't', tls: true });
});

test('job options map to the JobSpec in BullMQ units', () => {
  const payload = Buffer.from('p');
  assert.deepEqual(buildSpec('n', payload, undefined), [null, 'n', payload]);
  const spec = buildSpec('n', payload, {
    jobId: 'k1', priority: 2, delay: 5000, attempts: 4, backoff: { type: 'exponential', delay: 2000 },
    removeOnComplete: 100, removeOnFail: { count: 5, age: 3600 }, leaseMs: 60_000,
  });
  assert.deepEqual(spec, ['k1', 'n', payload, 2, 5000, null, 4, ['exponential', 2000], 60_000, [100, null], [5, 3_600_000]]);
  assert.deepEqual(buildSpec('n', payload, { removeOnComplete: true, removeOnFail: false }).slice(9),
    [[0, null], [null, null]]);
  assert.deepEqual(buildSpec('n', payload, { timeout: 30_000 }).slice(8), [null, null, null, 30_000]);
  assert.throws(() => buildSpec('n', payload, { timeout: 0 }), /timeout: expected an integer in 1/);
  assert.deepEqual(buildSpec('n', payload, { backoff: 500 })[7], ['fixed', 500]);
  assert.deepEqual(buildSpec('n', payload, { backoff: { type: 'fixed', delay: 10, jitter: 0.5 } })[7], ['fixed', 10, null, 0.5]);
  assert.equal(buildSpec('n', payload, { runAt: new Date(1_767_225_600_000) })[5], 1_767_225_600_000n);
  assert.throws(() => buildSpec('n', payload, { lifo: true }), /lifo: not supported/);
  assert.throws(() => buildSpec('n', payload, { attemps: 3 }), /unknown job option "attemps"/);
  assert.throws(() => buildSpec('n', payload, { attempts: 0 }), /attempts: expected an integer in 1/);
  assert.throws(() => buildSpec('n', payload, { jobId: 5 }), /jobId: expected a string/);
  assert.throws(() => buildSpec('n', payload, { backoff: { type: 'custom' } }), /custom backoff/);
});

test('reconnect delays double from the base, stay under the cap, and are jittered in [d/2, d]', () => {
  assert.equal(reconnectDelay(0, 100, 5000, () => 0), 50);
  assert.equal(reconnectDelay(0, 100, 5000, () => 1), 100);
  assert.equal(reconnectDelay(3, 100, 5000, () => 1), 800);
  assert.equal(reconnectDelay(10, 100, 5000, () => 1), 5000, 'capped');
  assert.equal(reconnectDelay(1000, 100, 5000, () => 0), 2500, 'no overflow for long outages');
  for (let attempt = 0; attempt < 20; attempt += 1) {
    const ceiling = Math.min(5000, 100 * 2 ** attempt);
    const delay = reconnectDelay(attempt, 100, 5000);
    assert.ok(delay >= ceiling / 2 && delay <= ceiling);
  }
});
