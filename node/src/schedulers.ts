/**
 * Job schedulers (repeatable jobs): BullMQ's `upsertJobScheduler` / `removeJobScheduler` /
 * `getJobSchedulers` over `schedule_upsert`, `schedule_remove` and `schedule_list` (SPEC
 * §8.25-8.27). Units are BullMQ's: milliseconds, dates as `Date` or ms since the epoch.
 *
 * The broker keeps each scheduler in its journal and makes every run an ordinary job, id
 * `repeat:<schedulerId>:<run ms>`, delayed until its time: exactly one job per run, across
 * restarts. It checks every field (the period's range, the cron pattern, the time zone, the
 * dates' order, the template's payload) and answers `BAD_ARGUMENT` naming the field, which
 * surfaces as a `BrokerError` of that code; this module only refuses, with a `TypeError`, what
 * it cannot send (unknown or unsupported options, a date it cannot read).
 */

import { toNumber } from './codec.js';
import type { Connection } from './connection.js';
import { brokerInt, brokerMs } from './flow.js';
import { buildSpec, type BackoffOptions, type JobsOptions, type KeepJobs } from './options.js';
import type { Serializer } from './serializer.js';

/** BullMQ's `RepeatOptions`, the subset the broker supports. Exactly one of `every` and `pattern`. */
export interface RepeatOptions {
  /** A run every `every` ms (1 ms..366 days); the first is due at once (or at `startDate`). */
  every?: number;
  /** A cron pattern (5 fields, or 6 with seconds first); see the README for the dialect. */
  pattern?: string;
  /** The IANA time zone `pattern` is read in (`'Europe/Berlin'`); UTC when not given. */
  tz?: string;
  /** No run before this time. */
  startDate?: Date | string | number;
  /** No run after this time. */
  endDate?: Date | string | number;
  /** At most this many runs in all. */
  limit?: number;
  /** Accepted for BullMQ code: `every` schedulers run at once anyway; `false` is refused. */
  immediately?: boolean;
}

/** A run's job options: `add`'s, without `jobId`, `delay` and `runAt` (each run gets its own). */
export type JobSchedulerTemplateOptions = Omit<JobsOptions, 'jobId' | 'delay' | 'runAt'>;

/** What each run's job is (BullMQ's job template). `name` defaults to the scheduler id. */
export interface JobSchedulerTemplate<DataType = any, NameType extends string = string> {
  name?: NameType;
  data?: DataType;
  opts?: JobSchedulerTemplateOptions;
}

/** A scheduler as the broker holds it (BullMQ's `JobSchedulerJson`, times in ms). */
export interface JobSchedulerJson<DataType = any> {
  /** The scheduler id. */
  key: string;
  /** Each run's job name. */
  name: string;
  /** Runs made so far (counted against `limit`). */
  iterationCount: number;
  limit?: number;
  every?: number;
  pattern?: string;
  tz?: string;
  startDate?: number;
  endDate?: number;
  /** When the pending run is due (its job exists, delayed until then); absent when no more. */
  next?: number;
  /** jobwire: the pending run's job id (`repeat:<key>:<next>`), when there is one. */
  nextJobId?: string;
  /** jobwire: when the id was first upserted (ms). */
  createdAt: number;
  template: { data?: DataType; opts: JobSchedulerTemplateOptions };
}

/** The reply of `schedule_upsert`, read. */
export interface Upserted {
  scheduler: JobSchedulerJson;
  created: boolean;
  changed: boolean;
}

const REPEAT_KEYS = new Set(['every', 'pattern', 'tz', 'startDate', 'endDate', 'limit', 'immediately']);
const NOT_IN_TEMPLATE = ['jobId', 'delay', 'runAt'];

/** A date as ms since the epoch; a number is sent as it is (the broker checks its range). */
function toMs(value: Date | string | number, field: string): unknown {
  if (value instanceof Date) return brokerInt(value.getTime(), field);
  if (typeof value === 'string') {
    const ms = Date.parse(value);
    if (Number.isNaN(ms)) throw new TypeError(`${field}: cannot read ${JSON.stringify(value)} as a date`);
    return brokerInt(ms, field);
  }
  return brokerMs(value, field);
}

/**
 * The `schedule_upsert` args.
 *
 * @throws TypeError for an option jobwire does not support, a template option a run cannot have
 *   (`jobId`, `delay`, `runAt`), a date it cannot read, or a bad job option (as `add`).
 */
export function upsertArgs(
  queue: string, schedulerId: string, repeat: RepeatOptions, template: JobSchedulerTemplate,
  serializer: Serializer,
): Record<string, unknown> {
  if (typeof repeat !== 'object' || repeat === null) throw new TypeError('repeat options: expected an object');
  for (const key of Object.keys(repeat)) {
    if ((repeat as Record<string, unknown>)[key] === undefined) continue;
    if (!REPEAT_KEYS.has(key)) {
      throw new TypeError(`repeat option ${JSON.stringify(key)} not supported by jobwire; expected some of ` +
        `${[...REPEAT_KEYS].join(', ')}`);
    }
  }
  if (repeat.immediately === false) {
    throw new TypeError('immediately: false is not supported (an `every` scheduler\'s first run is due at once; use startDate)');
  }
  const opts = template.opts ?? {};
  const refused = NOT_IN_TEMPLATE.filter((key) => (opts as Record<string, unknown>)[key] !== undefined);
  if (refused.length > 0) {
    throw new TypeError(`a scheduler's job cannot have ${refused.join(', ')}: each run gets its own id and run time`);
  }
  const name = template.name ?? schedulerId;
  const args: Record<string, unknown> = {
    queue, key: schedulerId, job: buildSpec(name, serializer.serialize(template.data ?? null), opts),
  };
  if (repeat.every !== undefined) args.every_ms = brokerMs(repeat.every, 'every');
  if (repeat.pattern !== undefined) args.cron = repeat.pattern;
  if (repeat.tz !== undefined) args.tz = repeat.tz;
  if (repeat.startDate !== undefined) args.start_ms = toMs(repeat.startDate, 'startDate');
  if (repeat.endDate !== undefined) args.end_ms = toMs(repeat.endDate, 'endDate');
  if (repeat.limit !== undefined) args.limit = brokerInt(repeat.limit, 'limit');
  return args;
}

export function upsertedFromWire(body: Record<string, unknown>, serializer: Serializer): Upserted {
  return {
    scheduler: schedulerFromWire(body.scheduler as Record<string, unknown>, serializer),
    created: body.created === true,
    changed: body.changed === true,
  };
}

/** Every scheduler of `queue`, by id, page by page (`schedule_list` pages hold at most 1,000). */
export async function listSchedulers(connection: Connection, queue: string, serializer: Serializer): Promise<JobSchedulerJson[]> {
  const gathered: JobSchedulerJson[] = [];
  for (;;) {
    const body = await connection.request<{ schedulers: Record<string, unknown>[]; total: unknown }>(
      'schedule_list', { queue, offset: gathered.length, limit: 1000 });
    for (const raw of body.schedulers) gathered.push(schedulerFromWire(raw, serializer));
    if (body.schedulers.length === 0 || gathered.length >= toNumber(body.total)) return gathered;
  }
}

/** How many schedulers `queue` has (one small request). */
export async function countSchedulers(connection: Connection, queue: string): Promise<number> {
  const body = await connection.request<{ total: unknown }>('schedule_list', { queue, offset: 0, limit: 1 });
  return toNumber(body.total);
}

/**
 * Schedulers ordered by their next run (BullMQ's order), those with no next run last, then by
 * id; positions `start..end` inclusive (`end` negative: to the last).
 */
export function pageByNextRun(all: JobSchedulerJson[], start: number, end: number, asc: boolean): JobSchedulerJson[] {
  const sorted = [...all].sort((a, b) => {
    const x = a.next ?? Infinity;
    const y = b.next ?? Infinity;
    if (x !== y) return (asc || x === Infinity || y === Infinity ? 1 : -1) * (x < y ? -1 : 1);
    return a.key < b.key ? -1 : a.key > b.key ? 1 : 0;
  });
  return sorted.slice(Math.max(0, start), end < 0 ? undefined : end + 1);
}

function optional(value: unknown): number | undefined {
  return value === null || value === undefined ? undefined : toNumber(value);
}

export function schedulerFromWire(raw: Record<string, unknown>, serializer: Serializer): JobSchedulerJson {
  const spec = raw.job as unknown[];
  let data: unknown;
  try {
    data = serializer.deserialize(spec[2] as Uint8Array);
  } catch {
    data = undefined; // a template of another serializer: the rest of the record is still useful
  }
  const key = String(raw.key);
  const next = optional(raw.next_run_at);
  const scheduler: JobSchedulerJson = {
    key, name: String(spec[1]), iterationCount: toNumber(raw.count ?? 0),
    createdAt: toNumber(raw.created_at ?? 0), template: { data, opts: optionsFromSpec(spec) },
  };
  const fields: [keyof JobSchedulerJson, unknown][] = [
    ['limit', optional(raw.limit)], ['every', optional(raw.every_ms)],
    ['pattern', raw.cron ?? undefined], ['tz', raw.tz ?? undefined],
    ['startDate', optional(raw.start_ms)], ['endDate', optional(raw.end_ms)], ['next', next],
    ['nextJobId', next === undefined ? undefined : `repeat:${key}:${next}`],
  ];
  for (const [field, value] of fields) if (value !== undefined) (scheduler as unknown as Record<string, unknown>)[field] = value;
  return scheduler;
}

/** A template's JobSpec (SPEC §9.1) back to job options (the inverse of `buildSpec`). */
export function optionsFromSpec(spec: unknown[]): JobSchedulerTemplateOptions {
  const opts: JobSchedulerTemplateOptions = {};
  const at = (index: number): unknown => spec[index] ?? undefined;
  if (at(3) !== undefined) opts.priority = toNumber(at(3));
  if (at(6) !== undefined) opts.attempts = toNumber(at(6));
  const backoff = at(7);
  if (Array.isArray(backoff)) {
    const value: BackoffOptions = { type: backoff[0] as 'exponential' | 'fixed', delay: toNumber(backoff[1]) };
    if (typeof backoff[3] === 'number' && backoff[3] > 0) value.jitter = backoff[3];
    opts.backoff = value;
  }
  if (at(8) !== undefined) opts.leaseMs = toNumber(at(8));
  if (at(9) !== undefined) opts.removeOnComplete = keepFromWire(at(9));
  if (at(10) !== undefined) opts.removeOnFail = keepFromWire(at(10));
  if (at(11) !== undefined) opts.timeout = toNumber(at(11));
  return opts;
}

function keepFromWire(value: unknown): KeepJobs {
  if (typeof value === 'boolean') return value;
  const [count, ageMs] = (value as unknown[]).map((item) => (item === null || item === undefined ? undefined : toNumber(item)));
  if (ageMs === undefined) return count === undefined ? false : count === 0 ? true : count;
  return count === undefined ? { age: ageMs / 1000 } : { count, age: ageMs / 1000 };
}
