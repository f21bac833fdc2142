/**
 * Job data and results ↔ bytes. The broker never decodes payloads; the producer and the worker
 * must agree on the serializer. The default is msgpack, which the Python client also uses by
 * default, so jobs cross between the two languages (see README "Values across languages").
 *
 * Rules of the msgpack serializer, on top of msgpackr's own:
 * - An integer `number` outside the 32-bit range is written as an int64 (msgpackr alone would
 *   write a float64, and Python would read `1764680000000.0`).
 * - An object property whose value is `undefined` is left out, as `JSON.stringify` (and so
 *   BullMQ) does; `undefined` anywhere else is nil.
 * - Decoding gives a `number` for integers up to 2^53 and a `bigint` beyond.
 */

import { Packr, Unpackr } from 'msgpackr';

/** Turns job data and results into bytes and back. */
export interface Serializer {
  serialize(value: unknown): Buffer;
  deserialize(bytes: Uint8Array): unknown;
}

const packr = new Packr({ useRecords: false, encodeUndefinedAsNil: true });
// 'auto' (number up to 2^53, bigint beyond) is in msgpackr's code but not in its type list.
const unpackr = new Unpackr({
  useRecords: false, mapsAsObjects: true, int64AsType: 'auto' as 'bigint',
});

const INT32_MIN = -0x80000000;
const UINT32_MAX = 0xffffffff;
const MAX_DEPTH = 512;

function isWideInt(value: number): boolean {
  return (value > UINT32_MAX || value < INT32_MIN) && Number.isSafeInteger(value);
}

function isPlainObject(value: object): value is Record<string, unknown> {
  const proto = Object.getPrototypeOf(value) as unknown;
  return proto === Object.prototype || proto === null;
}

/** Whether `value` holds a wide integer or an undefined property (then it needs `normalize`). */
function needsNormalize(value: unknown, depth: number): boolean {
  if (typeof value === 'number') return isWideInt(value);
  if (typeof value !== 'object' || value === null || depth > MAX_DEPTH) return false;
  if (Array.isArray(value)) {
    for (const item of value) if (needsNormalize(item, depth + 1)) return true;
    return false;
  }
  if (!isPlainObject(value)) return false;
  for (const key in value) {
    const item = value[key];
    if (item === undefined || needsNormalize(item, depth + 1)) return true;
  }
  return false;
}

/** A copy of `value` with wide integers as bigints and undefined properties dropped. */
function normalize(value: unknown, depth: number): unknown {
  if (typeof value === 'number') return isWideInt(value) ? BigInt(value) : value;
  if (typeof value !== 'object' || value === null || depth > MAX_DEPTH) return value;
  if (Array.isArray(value)) return value.map((item) => normalize(item, depth + 1));
  if (!isPlainObject(value)) return value;
  const out: Record<string, unknown> = {};
  for (const key in value) {
    const item = value[key];
    if (item !== undefined) out[key] = normalize(item, depth + 1);
  }
  return out;
}

/** msgpack (the default): see the module comment for the rules. */
export const msgpackSerializer: Serializer = {
  serialize(value: unknown): Buffer {
    return packr.pack(needsNormalize(value, 0) ? normalize(value, 0) : value);
  },
  deserialize(bytes: Uint8Array): unknown {
    return bytes.length === 0 ? undefined : unpackr.unpack(bytes);
  },
};

/** UTF-8 JSON, like BullMQ's storage: Dates become ISO strings, Buffers `{type, data}`. */
export const jsonSerializer: Serializer = {
  serialize(value: unknown): Buffer {
    return Buffer.from(JSON.stringify(value) ?? 'null');
  },
  deserialize(bytes: Uint8Array): unknown {
    return bytes.length === 0 ? undefined : JSON.parse(Buffer.from(bytes).toString('utf8'));
  },
};

/** Resolve the `serializer` option: `'msgpack'` (default), `'json'` or your own object. */
export function getSerializer(spec: Serializer | 'msgpack' | 'json' | undefined): Serializer {
  if (spec === undefined || spec === 'msgpack') return msgpackSerializer;
  if (spec === 'json') return jsonSerializer;
  if (typeof spec.serialize !== 'function' || typeof spec.deserialize !== 'function') {
    throw new TypeError('serializer: expected "msgpack", "json" or {serialize, deserialize}');
  }
  return spec;
}

/**
 * A progress value as the wire carries it (a plain msgpack value, no extension types): wide
 * integers as int64, undefined properties dropped, a Date as its ISO string (as JSON would),
 * a Map as an object with string keys. Other values pass as they are.
 *
 * @throws TypeError on a function, symbol or a nesting deeper than 32 levels.
 */
export function toProgressValue(value: unknown, depth = 0): unknown {
  if (depth > 32) throw new TypeError('progress: nested more than 32 levels');
  switch (typeof value) {
    case 'number':
      return isWideInt(value) ? BigInt(value) : value;
    case 'function':
    case 'symbol':
      throw new TypeError(`progress: cannot send a ${typeof value}`);
    case 'object':
      break;
    default:
      return value;
  }
  if (value === null || value instanceof Uint8Array) return value;
  if (value instanceof Date) return value.toISOString();
  if (Array.isArray(value)) return value.map((item) => toProgressValue(item, depth + 1));
  const entries = value instanceof Map ? [...value.entries()] : Object.entries(value);
  const out: Record<string, unknown> = {};
  for (const [key, item] of entries) {
    if (item !== undefined) out[String(key)] = toProgressValue(item, depth + 1);
  }
  return out;
}

/** Decode a progress value from the broker: 64-bit ints as number when safe, else bigint. */
export function fromWireValue(value: unknown): unknown {
  if (typeof value === 'bigint') {
    return value <= BigInt(Number.MAX_SAFE_INTEGER) && value >= BigInt(Number.MIN_SAFE_INTEGER)
      ? Number(value) : value;
  }
  if (typeof value !== 'object' || value === null || value instanceof Uint8Array) return value;
  if (Array.isArray(value)) return value.map(fromWireValue);
  const out: Record<string, unknown> = {};
  for (const [key, item] of Object.entries(value)) out[key] = fromWireValue(item);
  return out;
}
