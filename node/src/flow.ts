/**
 * Flow control: a queue's rate and concurrency limits (SPEC §8.18 `limit`), which the broker
 * enforces in `reserve` across every worker and connection, and BullMQ's "not now"
 * (`worker.rateLimit(ms)` + `throw Worker.RateLimitError()`), which a worker turns into a
 * `release` with a delay (SPEC §8.16): the job goes back without counting an attempt.
 *
 * Values go to the broker as given (integers as wire ints, durations rounded to whole ms): the
 * broker checks every range and answers `BAD_ARGUMENT` naming the field (`rate.max`,
 * `rate.period_ms`, `concurrency`), so a bad value surfaces as a `BrokerError` of that code.
 */

import { toNumber, wireInt } from './codec.js';
import type { Connection } from './connection.js';

/** BullMQ's `limiter` (Worker option) and `setGlobalRateLimit(max, duration)`. */
export interface RateLimiterOptions {
  /** Jobs that may start in any window of `duration` ms (1..1,000,000). */
  max: number;
  /** The window, ms (1..2,678,400,000: 31 days). */
  duration: number;
}

/** A queue's flow control as the broker enforces it (`null`: not set). */
export interface QueueLimits {
  /** At most `max` of the queue's jobs start in any window of `duration` ms. */
  rateLimit: RateLimiterOptions | null;
  /** At most this many of the queue's jobs are active at once. */
  concurrency: number | null;
  /** A "not now" pause (`worker.rateLimit`) runs until this time (ms since the epoch, broker clock). */
  pausedUntil: number | null;
  /**
   * jobwire: the rate limit's window is full; the next job may start at this time (ms since the
   * epoch, broker clock). `null`: one may start now, no rate limit, or an older broker.
   */
  rateFreeAt: number | null;
}

/** What `limit` changes: a value sets, `false` clears, `undefined` leaves it as it is. */
export interface LimitsChange {
  rate?: RateLimiterOptions | false;
  concurrency?: number | false;
}

/**
 * Thrown by a processor: "not now". The job goes back to the queue **without counting an
 * attempt** (a `release`, not a `fail`): after `worker.rateLimit(ms)`, delayed for the rest of
 * those ms with the queue paused for every worker meanwhile (BullMQ's pattern); otherwise delayed
 * by `delay` ms (jobwire; 0 when not given: waiting again at once), this job only.
 */
export class RateLimitError extends Error {
  override name = 'RateLimitError';
  /** jobwire: how long this job waits (ms) when no `worker.rateLimit(ms)` is running. */
  readonly delay: number;

  constructor(delay = 0) {
    super('rate limit exceeded: not now');
    if (!Number.isFinite(delay) || delay < 0) throw new RangeError('RateLimitError: delay must be >= 0 (ms)');
    this.delay = delay;
  }
}

/** True for a `RateLimitError` (also one from another copy of this package). */
export function isRateLimitError(error: unknown): error is RateLimitError {
  return error instanceof RateLimitError || (error instanceof Error && error.name === 'RateLimitError');
}

/** An int for the wire when it is one; anything else as it is, for the broker to refuse. */
export function brokerInt(value: unknown, field: string): unknown {
  return typeof value === 'number' && Number.isInteger(value) ? wireInt(value, field) : value;
}

/** A duration in ms, rounded to a whole ms when it is a finite number (else sent as it is). */
export function brokerMs(value: unknown, field: string): unknown {
  return typeof value === 'number' && Number.isFinite(value) ? wireInt(Math.round(value), field) : value;
}

/**
 * Send `limit` for `queue`: set, clear or (with an empty change) only read its limits.
 *
 * @throws BrokerError `BAD_ARGUMENT` naming the field for a value out of range.
 */
export async function limit(connection: Connection, queue: string, change: LimitsChange = {}): Promise<QueueLimits> {
  const args: Record<string, unknown> = { queue };
  if (change.rate === false) args.rate = false;
  else if (change.rate !== undefined) {
    args.rate = [brokerInt(change.rate.max, 'rate.max'), brokerMs(change.rate.duration, 'rate.duration')];
  }
  if (change.concurrency !== undefined) {
    args.concurrency = change.concurrency === false ? false : brokerInt(change.concurrency, 'concurrency');
  }
  const body = await connection.request<{ limits: Record<string, unknown> }>('limit', args);
  return limitsFromWire(body.limits);
}

function optional(value: unknown): number | null {
  return value === null || value === undefined ? null : toNumber(value);
}

export function limitsFromWire(raw: Record<string, unknown>): QueueLimits {
  const max = optional(raw.rate_max);
  const period = optional(raw.rate_period_ms);
  return {
    rateLimit: max === null || period === null ? null : { max, duration: period },
    concurrency: optional(raw.concurrency),
    pausedUntil: optional(raw.paused_until),
    rateFreeAt: optional(raw.rate_free_at),
  };
}

/** The longest "not now" pause the broker takes (SPEC §8.12 `for_ms`: 10 years). */
export const MAX_PAUSE_MS = 315_360_000_000;

/**
 * Pause `queue` for `ms` ms on the broker, for every worker (SPEC §8.12 `pause` with `for_ms`;
 * a longer pause already running is kept). Only a broker that knows `for_ms` gets the `pause`:
 * one whose `limit` reply carries `rate_free_at` (SPEC §8.18); an older broker would ignore
 * `for_ms` and pause the queue until `resume`, so it gets nothing and this returns false.
 */
export async function pauseQueueFor(connection: Connection, queue: string, ms: number): Promise<boolean> {
  const probe = await connection.request<{ limits: Record<string, unknown> }>('limit', { queue });
  if (!('rate_free_at' in probe.limits)) return false;
  const forMs = Math.min(MAX_PAUSE_MS, Math.max(1, Math.round(ms)));
  await connection.request('pause', { queue, for_ms: wireInt(forMs, 'for_ms') });
  return true;
}

/**
 * A Worker's `limiter` option, checked at once (a constructor cannot wait for the broker's
 * answer): the ranges are the broker's (SPEC §8.18).
 *
 * @throws TypeError/RangeError naming the field.
 */
export function checkLimiter(value: unknown): RateLimiterOptions {
  if (typeof value !== 'object' || value === null) throw new TypeError('limiter: expected { max, duration }');
  const { max, duration, ...rest } = value as Record<string, unknown>;
  const unknown = Object.keys(rest).filter((key) => rest[key] !== undefined);
  if (unknown.length > 0) {
    throw new TypeError(`limiter: ${unknown.join(', ')} not supported by jobwire (only max and duration)`);
  }
  if (typeof max !== 'number' || !Number.isInteger(max) || max < 1 || max > 1_000_000) {
    throw new RangeError('limiter.max: expected an integer in 1..1,000,000');
  }
  if (typeof duration !== 'number' || !(duration >= 1 && duration <= 2_678_400_000)) {
    throw new RangeError('limiter.duration: expected 1..2,678,400,000 ms');
  }
  return { max, duration: Math.round(duration) };
}
