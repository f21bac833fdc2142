/**
 * BullMQ job options (milliseconds) → the wire's JobSpec array (SPEC §9.1). Pure functions.
 */

import { wireInt } from './codec.js';

/** BullMQ's `backoff`: a number is a fixed delay in ms. `jitter` (0..1) only shortens delays. */
export type BackoffOptions =
  | number
  | { type: 'exponential' | 'fixed'; delay?: number; jitter?: number };

/** BullMQ's `removeOnComplete`/`removeOnFail`: `age` is in **seconds**, as in BullMQ. */
export type KeepJobs = boolean | number | { count?: number; age?: number };

/** Options of one job (BullMQ's `JobsOptions`, the subset the broker supports, plus two). */
export interface JobsOptions {
  /** Lower runs first; 0 (the default) before 1, as in BullMQ. */
  priority?: number;
  /** Milliseconds before the job may run. */
  delay?: number;
  /** Deliveries before the job fails for good (BullMQ default 1; the broker's default is 3). */
  attempts?: number;
  backoff?: BackoffOptions;
  /** An idempotency key: adding the same id again creates nothing. Not all digits. */
  jobId?: string;
  removeOnComplete?: KeepJobs;
  removeOnFail?: KeepJobs;
  /** jobwire: run no earlier than this time (a Date or ms since the epoch; wins over `delay`). */
  runAt?: Date | number;
  /** jobwire: this job's lease (ms), overriding the worker's `lockDuration`. */
  leaseMs?: number;
  /**
   * The longest one attempt may run, ms (BullMQ's `timeout`; 1..604,800,000). The broker fails
   * an attempt with no outcome 1 s after it (SPEC §11.9); this client's worker does not cancel
   * its handler (a promise cannot be), so that attempt's later outcome is refused.
   */
  timeout?: number;
}

const KNOWN = new Set([
  'priority', 'delay', 'attempts', 'backoff', 'jobId', 'removeOnComplete', 'removeOnFail',
  'runAt', 'leaseMs', 'timeout',
]);

/** BullMQ options that would change what a job does and that the broker cannot do (yet). */
const UNSUPPORTED: Record<string, string> = {
  lifo: 'the broker runs jobs of equal priority in FIFO order only',
  repeat: 'use queue.upsertJobScheduler(id, { every | pattern }, { name, data, opts })',
  parent: 'flows (parent/child jobs) are not supported',
  deduplication: 'use jobId for idempotent adds',
  debounce: 'use jobId for idempotent adds',
};

function int(value: unknown, field: string, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new RangeError(`${field}: expected an integer in ${min}..${max}, got ${String(value)}`);
  }
  return value;
}

const MAX_DELAY_MS = 315_360_000_000;

function toBackoff(value: BackoffOptions): unknown[] {
  if (typeof value === 'number') return ['fixed', wireInt(int(value, 'backoff', 0, MAX_DELAY_MS), 'backoff')];
  if (typeof value !== 'object' || value === null) {
    throw new TypeError('backoff: expected a number (ms) or { type, delay }');
  }
  if (value.type !== 'exponential' && value.type !== 'fixed') {
    throw new TypeError(`backoff.type: expected "exponential" or "fixed", got ${JSON.stringify(value.type)} ` +
      '(custom backoff strategies are not supported)');
  }
  const delay = wireInt(int(value.delay ?? 0, 'backoff.delay', 0, MAX_DELAY_MS), 'backoff.delay');
  const jitter = value.jitter ?? 0;
  if (typeof jitter !== 'number' || !(jitter >= 0 && jitter <= 1)) {
    throw new RangeError('backoff.jitter: expected a number in 0..1');
  }
  return jitter === 0 ? [value.type, delay] : [value.type, delay, null, jitter];
}

/** A wire Retention for BullMQ's keep option: always the 2-item `[count, age_ms]` form. */
function toRetention(value: KeepJobs, field: string): unknown[] {
  if (value === true) return [0, null];
  if (value === false) return [null, null];
  if (typeof value === 'number') return [int(value, field, 0, 2 ** 31), null];
  if (typeof value === 'object' && value !== null) {
    const count = value.count === undefined ? null : int(value.count, `${field}.count`, 0, 2 ** 31);
    const age = value.age === undefined ? null
      : wireInt(Math.round(int(value.age, `${field}.age`, 0, MAX_DELAY_MS / 1000) * 1000), `${field}.age`);
    return [count, age];
  }
  throw new TypeError(`${field}: expected a boolean, a count, or { count, age (seconds) }`);
}

/**
 * The wire JobSpec for one job.
 *
 * @throws TypeError or RangeError naming the option when one is of the wrong type or range, or
 *   is a BullMQ option the broker does not support.
 */
export function buildSpec(name: string, payload: Buffer, opts: JobsOptions | undefined): unknown[] {
  if (typeof name !== 'string') throw new TypeError('name: expected a string');
  if (!opts) return [null, name, payload];
  for (const key of Object.keys(opts)) {
    if ((opts as Record<string, unknown>)[key] === undefined) continue;
    if (key in UNSUPPORTED) throw new TypeError(`${key}: not supported by jobwire (${UNSUPPORTED[key]})`);
    if (!KNOWN.has(key)) {
      throw new TypeError(`unknown job option ${JSON.stringify(key)}; expected some of ${[...KNOWN].join(', ')}`);
    }
  }
  if (opts.jobId !== undefined && typeof opts.jobId !== 'string') {
    throw new TypeError('jobId: expected a string (ids of only digits are the broker\'s own)');
  }
  const spec: unknown[] = [
    opts.jobId ?? null,
    name,
    payload,
    opts.priority === undefined ? null : int(opts.priority, 'priority', -(2 ** 31), 2 ** 31 - 1),
    opts.delay === undefined || opts.delay === 0 ? null
      : wireInt(int(Math.round(opts.delay), 'delay', 0, MAX_DELAY_MS), 'delay'),
    opts.runAt === undefined ? null
      : wireInt(int(opts.runAt instanceof Date ? opts.runAt.getTime() : opts.runAt, 'runAt', 0, 2 ** 53), 'runAt'),
    opts.attempts === undefined ? null : int(opts.attempts, 'attempts', 1, 1_000_000),
    opts.backoff === undefined ? null : toBackoff(opts.backoff),
    opts.leaseMs === undefined ? null : int(opts.leaseMs, 'leaseMs', 100, 86_400_000),
    opts.removeOnComplete === undefined ? null : toRetention(opts.removeOnComplete, 'removeOnComplete'),
    opts.removeOnFail === undefined ? null : toRetention(opts.removeOnFail, 'removeOnFail'),
    opts.timeout === undefined ? null : int(opts.timeout, 'timeout', 1, 604_800_000),
  ];
  while (spec.length > 3 && spec[spec.length - 1] === null) spec.pop();
  return spec;
}

/** Queue defaults under per-call options (a shallow merge, as BullMQ does). */
export function mergeOptions(defaults: JobsOptions | undefined, opts: JobsOptions | undefined): JobsOptions | undefined {
  if (!defaults) return opts;
  if (!opts) return defaults;
  return { ...defaults, ...opts };
}
