/**
 * The producer: BullMQ's `Queue`, over jobwire's wire operations.
 *
 * `add()` calls made in the same turn of the event loop are gathered (one `setImmediate`) into one
 * `enqueue` request per queue, split only at the broker's batch size and at 80% of its frame
 * size; each call still gets its own Job. `addBulk()` sends its jobs the same way at once. All
 * requests go through one pipelined connection, so a burst of calls leaves in one write.
 */

import { EventEmitter } from 'node:events';

import { toNumber } from './codec.js';
import { Connection, type ConnectionInput } from './connection.js';
import { BrokerError, ConnectionLostError } from './errors.js';
import { limit, type QueueLimits } from './flow.js';
import { Job, type JobOwner } from './job.js';
import {
  ALL_TYPES, countOf, listJobs, stateOf, type BrokerState, type JobType, type QueueStats,
} from './listing.js';
import { defaultLogger, type Logger } from './log.js';
import { buildSpec, mergeOptions, type JobsOptions } from './options.js';
import {
  countSchedulers, listSchedulers, pageByNextRun, upsertArgs, upsertedFromWire,
  type JobSchedulerJson, type JobSchedulerTemplate, type RepeatOptions,
} from './schedulers.js';
import { getSerializer, type Serializer } from './serializer.js';

export interface QueueOptions {
  /** `jobwire://[token@]host:port`, connection options, or a `Connection` to share. */
  connection?: ConnectionInput;
  /** Options every `add` starts from (a call's own options win, key by key). */
  defaultJobOptions?: JobsOptions;
  /** Payload encoding: `'msgpack'` (default, as the Python client), `'json'`, or your own. */
  serializer?: Serializer | 'msgpack' | 'json';
  logger?: Logger;
}

/** A job for `addBulk`, as in BullMQ. */
export interface BulkJob<DataType = any, NameType extends string = string> {
  name: NameType;
  data: DataType;
  opts?: JobsOptions;
}

export type { JobType, QueueStats } from './listing.js';

interface PendingAdd {
  spec: unknown[];
  name: string;
  data: unknown;
  opts: JobsOptions;
  resolve: (job: Job) => void;
  reject: (error: Error) => void;
}

/** Frame bytes per job beyond its payload, name and id (an over-estimate). */
const PER_JOB_OVERHEAD = 64;

/**
 * Events (as BullMQ's Queue, for what happens through this Queue object): `waiting` (job) after
 * an add, `paused`, `resumed`, `error` (the connection was lost or refused; logged instead when
 * nothing listens).
 */
export class Queue<DataType = any, ResultType = any, NameType extends string = string>
  extends EventEmitter implements JobOwner {
  readonly connection: Connection;
  readonly serializer: Serializer;
  readonly defaultJobOptions: JobsOptions | undefined;
  private readonly ownsConnection: boolean;
  private adds: PendingAdd[] = [];
  private flushScheduled = false;
  private inflight = new Set<Promise<unknown>>();
  private closing: Promise<void> | null = null;
  private readonly logger: Logger;
  private readonly onLost = (cause: Error | null): void => {
    this.emitError(new ConnectionLostError(
      `connection to the broker lost (${cause?.message ?? 'closed by the broker'}); reconnecting on the next call`));
  };
  private readonly onConnectionError = (error: Error): void => this.emitError(error);

  constructor(readonly name: string, opts: QueueOptions = {}) {
    super();
    if (typeof name !== 'string' || name.length === 0) throw new TypeError('Queue: a name is required');
    const { connection, owned } = Connection.from(opts.connection, opts.logger);
    this.connection = connection;
    this.ownsConnection = owned;
    this.serializer = getSerializer(opts.serializer);
    this.defaultJobOptions = opts.defaultJobOptions;
    this.logger = opts.logger ?? defaultLogger;
    this.connection.on('lost', this.onLost);
    this.connection.on('error', this.onConnectionError);
  }

  private emitError(error: Error): void {
    if (this.listenerCount('error') > 0) this.emit('error', error);
    else this.logger.warn(`queue ${this.name}: ${error.message}`);
  }

  /** Resolves once connected to the broker. */
  waitUntilReady(): Promise<void> {
    return this.connection.connect();
  }

  /**
   * Add one job. Calls in the same tick share one `enqueue` request.
   *
   * @returns the job; when its `jobId` already existed in this queue, nothing was created and the
   *   job is the stored one (its data, name and state as the broker holds them, one more round
   *   trip), with `job.duplicate` true.
   * @throws TypeError/RangeError for bad options (at once); BrokerError (`QUEUE_FULL`,
   *   `PAYLOAD_TOO_LARGE`, `DRAINING`, `BAD_ARGUMENT`...); ConnectionLostError (the job may or
   *   may not exist: retry with a `jobId`).
   */
  add(name: NameType, data: DataType, opts?: JobsOptions): Promise<Job<DataType, ResultType, NameType>> {
    if (this.closing) return Promise.reject(new TypeError(`queue ${this.name} is closed`));
    const merged = mergeOptions(this.defaultJobOptions, opts) ?? {};
    let spec: unknown[];
    try {
      spec = buildSpec(name, this.serializer.serialize(data), merged);
    } catch (error) {
      return Promise.reject(error);
    }
    return new Promise((resolve, reject) => {
      this.adds.push({ spec, name, data, opts: merged, resolve: resolve as (job: Job) => void, reject });
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        setImmediate(() => this.flushAdds());
      }
    });
  }

  /** Add many jobs at once (one `enqueue` per `max_batch` jobs, all pipelined). */
  async addBulk(jobs: BulkJob<DataType, NameType>[]): Promise<Job<DataType, ResultType, NameType>[]> {
    if (this.closing) throw new TypeError(`queue ${this.name} is closed`);
    const items: PendingAdd[] = [];
    const done: Promise<Job>[] = [];
    for (const job of jobs) {
      const merged = mergeOptions(this.defaultJobOptions, job.opts) ?? {};
      const spec = buildSpec(job.name, this.serializer.serialize(job.data), merged);
      done.push(new Promise((resolve, reject) => {
        items.push({ spec, name: job.name, data: job.data, opts: merged, resolve, reject });
      }));
    }
    this.send(items);
    return Promise.all(done) as Promise<Job<DataType, ResultType, NameType>[]>;
  }

  private flushAdds(): void {
    this.flushScheduled = false;
    const items = this.adds;
    this.adds = [];
    this.send(items);
  }

  private send(items: PendingAdd[]): void {
    const server = this.connection.server;
    const maxBatch = server?.maxBatch ?? 10_000;
    const maxBytes = Math.floor((server?.maxFrame ?? 8 * 1024 * 1024) * 0.8);
    let batch: PendingAdd[] = [];
    let size = 0;
    for (const item of items) {
      const cost = (item.spec[2] as Buffer).length + item.name.length * 4 + PER_JOB_OVERHEAD
        + (typeof item.spec[0] === 'string' ? item.spec[0].length * 4 : 0);
      if (batch.length > 0 && (batch.length >= maxBatch || size + cost > maxBytes)) {
        this.enqueue(batch);
        batch = [];
        size = 0;
      }
      batch.push(item);
      size += cost;
    }
    if (batch.length > 0) this.enqueue(batch);
  }

  private enqueue(batch: PendingAdd[]): void {
    const request = this.connection.request<{ ids: string[]; duplicates: number[] }>('enqueue', {
      queue: this.name, jobs: batch.map((item) => item.spec),
    }).then((body) => {
      const duplicates = new Set(body.duplicates.map(toNumber));
      body.ids.forEach((id, index) => {
        const item = batch[index]!;
        const job = new Job(this, this.name, item.name, item.data, item.opts, String(id));
        job.state = undefined;
        job.priority = item.opts.priority ?? 0;
        if (duplicates.has(index)) {
          this.track(this.stored(job).then((stored) => this.added(item, stored)));
        } else {
          this.added(item, job);
        }
      });
    }, (error: Error) => {
      for (const item of batch) item.reject(error);
    });
    this.track(request);
  }

  private added(item: PendingAdd, job: Job): void {
    item.resolve(job);
    try {
      this.emit('waiting', job);
    } catch (error) {
      this.emitError(error instanceof Error ? error : new Error(String(error)));
    }
  }

  /**
   * A duplicate add's job as the broker holds it; the request's view if it cannot be read
   * (removed since, the connection lost, a payload of another serializer): the add succeeded.
   */
  private async stored(job: Job): Promise<Job> {
    const found = (await this.getJob(job.id).catch(() => undefined)) ?? job;
    found.duplicate = true;
    return found;
  }

  private track(promise: Promise<unknown>): void {
    this.inflight.add(promise);
    void promise.finally(() => this.inflight.delete(promise));
  }

  /** This queue's job with this id, or undefined when it does not exist. */
  async getJob(jobId: string): Promise<Job<DataType, ResultType, NameType> | undefined> {
    try {
      const body = await this.connection.request<{ job: Record<string, unknown> }>('get', {
        id: jobId, queue: this.name,
      });
      return Job.fromInfo(this, body.job) as Job<DataType, ResultType, NameType>;
    } catch (error) {
      if (error instanceof BrokerError && error.code === 'NOT_FOUND') return undefined;
      throw error;
    }
  }

  /** This queue's counters (all zero for a queue the broker has not seen). */
  async getStats(): Promise<QueueStats> {
    const body = await this.connection.request<{ queues: Record<string, Record<string, unknown>> }>(
      'stats', { queue: this.name });
    const raw = body.queues[this.name] ?? {};
    return {
      waiting: toNumber(raw.waiting ?? 0),
      delayed: toNumber(raw.delayed ?? 0),
      active: toNumber(raw.active ?? 0),
      completed: toNumber(raw.completed ?? 0),
      failed: toNumber(raw.failed ?? 0),
      paused: raw.paused === true,
      oldestWaitingMs: raw.oldest_waiting_ms === null || raw.oldest_waiting_ms === undefined
        ? null : toNumber(raw.oldest_waiting_ms),
      totalCompleted: toNumber(raw.total_completed ?? 0),
      totalFailed: toNumber(raw.total_failed ?? 0),
    };
  }

  /**
   * Job counts by type (all types when none is named). Waiting jobs of a paused queue count as
   * `paused`, as in BullMQ; `prioritized` and `waiting-children` are always 0 (prioritized jobs
   * are `waiting`).
   */
  async getJobCounts(...types: JobType[]): Promise<Record<string, number>> {
    const stats = await this.getStats();
    const counts: Record<string, number> = {};
    for (const type of types.length > 0 ? types : ALL_TYPES) {
      counts[type] = countOf(stats, type);
    }
    return counts;
  }

  /** The sum of the counts of these types. */
  async getJobCountByTypes(...types: JobType[]): Promise<number> {
    const counts = await this.getJobCounts(...types);
    return Object.values(counts).reduce((sum, n) => sum + n, 0);
  }

  /** Jobs waiting or delayed (BullMQ's `count()`). */
  count(): Promise<number> { return this.getJobCountByTypes('waiting', 'paused', 'delayed'); }
  getWaitingCount(): Promise<number> { return this.getJobCountByTypes('waiting'); }
  getActiveCount(): Promise<number> { return this.getJobCountByTypes('active'); }
  getDelayedCount(): Promise<number> { return this.getJobCountByTypes('delayed'); }
  getCompletedCount(): Promise<number> { return this.getJobCountByTypes('completed'); }
  getFailedCount(): Promise<number> { return this.getJobCountByTypes('failed'); }

  /** Stop workers from getting this queue's jobs (adding still works). */
  async pause(): Promise<void> {
    await this.connection.request('pause', { queue: this.name });
    this.emit('paused');
  }

  async resume(): Promise<void> {
    await this.connection.request('resume', { queue: this.name });
    this.emit('resumed');
  }

  async isPaused(): Promise<boolean> {
    return (await this.getStats()).paused;
  }

  /**
   * Delete jobs of one state that finished (completed, failed) or were created (waiting,
   * delayed) at least `grace` ms ago, oldest first, at most `limit` (0: no limit).
   *
   * @returns how many were removed (BullMQ returns their ids; the broker reports a count).
   */
  async clean(grace: number, limit: number, type: JobType = 'completed'): Promise<number> {
    const state = type === 'wait' || type === 'paused' || type === 'prioritized' ? 'waiting' : type;
    if (state === 'active' || state === 'waiting-children') {
      throw new TypeError(`clean: cannot clean ${type} jobs (remove active jobs one by one)`);
    }
    const args: Record<string, unknown> = { queue: this.name, state, older_than_ms: Math.max(0, Math.round(grace)) };
    if (limit > 0) args.limit = limit;
    const body = await this.connection.request<{ removed: number }>('clean', args);
    return toNumber(body.removed);
  }

  /** Remove every waiting job (and delayed ones with `delayed = true`). */
  async drain(delayed = false): Promise<void> {
    await this.clean(0, 0, 'waiting');
    if (delayed) await this.clean(0, 0, 'delayed');
  }

  /** Remove one job in any state; 1 if it existed, else 0. */
  async remove(jobId: string): Promise<number> {
    try {
      await this.connection.request('cancel', { id: jobId, queue: this.name });
      return 1;
    } catch (error) {
      if (error instanceof BrokerError && error.code === 'NOT_FOUND') return 0;
      throw error;
    }
  }

  /**
   * Jobs of these types (all when none is named), positions `start` to `end` inclusive (`end`
   * negative: to the last) of their lists one after the other, in the order named. `asc`
   * false (the default, as BullMQ): newest first (waiting: last to run first; completed and
   * failed: last finished first); true: oldest first (waiting: run order). Types map to states
   * as in `getJobCounts`: a paused queue's waiting jobs are `paused`, not `waiting`;
   * `prioritized` and `waiting-children` are empty.
   */
  async getJobs(types?: JobType | JobType[], start = 0, end = -1, asc = false): Promise<Job<DataType, ResultType, NameType>[]> {
    const named = types === undefined ? ALL_TYPES : Array.isArray(types) ? (types.length > 0 ? types : ALL_TYPES) : [types];
    const needsPaused = named.some((type) => type === 'waiting' || type === 'wait' || type === 'paused');
    const paused = needsPaused ? await this.isPaused() : false;
    const states: BrokerState[] = [];
    for (const type of named) {
      const state = stateOf(type, paused);
      if (state && !states.includes(state)) states.push(state);
    }
    const infos = await listJobs(this.connection, this.name, states, start, end, asc);
    return infos.map((info) => Job.fromInfo(this, info) as Job<DataType, ResultType, NameType>);
  }

  /** Waiting jobs in run order (BullMQ's `getWaiting`; asc as BullMQ's). */
  getWaiting(start = 0, end = -1): Promise<Job<DataType, ResultType, NameType>[]> { return this.getJobs('waiting', start, end, true); }
  /** Active jobs, nearest lease deadline first. */
  getActive(start = 0, end = -1): Promise<Job<DataType, ResultType, NameType>[]> { return this.getJobs('active', start, end, true); }
  /** Delayed jobs, next due first. */
  getDelayed(start = 0, end = -1): Promise<Job<DataType, ResultType, NameType>[]> { return this.getJobs('delayed', start, end, true); }
  /** Completed jobs, last finished first. */
  getCompleted(start = 0, end = -1): Promise<Job<DataType, ResultType, NameType>[]> { return this.getJobs('completed', start, end, false); }
  /** Failed jobs (the dead-letter set), last failed first. */
  getFailed(start = 0, end = -1): Promise<Job<DataType, ResultType, NameType>[]> { return this.getJobs('failed', start, end, false); }

  /**
   * Delete this queue and every job in it, in every state; `stats` no longer lists it (a later
   * add creates it afresh, unpaused). Waits on its jobs end with `NOT_FOUND`.
   *
   * @param opts.force also delete active jobs (their workers' acks are refused and counted);
   *   without it a queue with active jobs is refused with BrokerError `CONFLICT`, nothing changed.
   * @returns how many jobs were deleted (BullMQ returns nothing).
   */
  async obliterate(opts: { force?: boolean } = {}): Promise<number> {
    const body = await this.connection.request<{ removed: unknown }>('obliterate', {
      queue: this.name, force: opts.force === true,
    });
    return toNumber(body.removed);
  }

  /**
   * Send failed jobs back to waiting with their attempts reset: all of them, oldest failure
   * first (BullMQ's `retryJobs({ state: 'failed' })`).
   *
   * @returns how many were retried.
   */
  async retryJobs(opts: { state?: 'failed'; count?: number } = {}): Promise<number> {
    if (opts.state !== undefined && opts.state !== 'failed') {
      throw new TypeError('retryJobs: only failed jobs can be retried');
    }
    const body = await this.connection.request<{ retried: number }>('retry_failed', { queue: this.name });
    return toNumber(body.retried);
  }

  /**
   * Create or update the job scheduler `schedulerId` (BullMQ's `upsertJobScheduler`): the broker
   * adds one job per run (id `repeat:<schedulerId>:<run ms>`), delayed until its time. The same
   * definition again changes nothing, so call it on every start.
   *
   * @returns the pending run's job (not read back: its state is unset), or undefined when the
   *   scheduler has no run left (past `endDate`, `limit` reached).
   * @throws BrokerError `BAD_ARGUMENT` naming the field (`every_ms`: neither or both of `every`
   *   and `pattern`, or out of range; `cron`; `tz`; `end_ms`; `job.payload`...); TypeError for
   *   options jobwire does not support.
   */
  async upsertJobScheduler(
    schedulerId: string, repeat: RepeatOptions, template: JobSchedulerTemplate<DataType, NameType> = {},
  ): Promise<Job<DataType, ResultType, NameType> | undefined> {
    const args = upsertArgs(this.name, schedulerId, repeat, template, this.serializer);
    const body = await this.connection.request<Record<string, unknown>>('schedule_upsert', args);
    const { scheduler } = upsertedFromWire(body, this.serializer);
    if (scheduler.nextJobId === undefined) return undefined;
    const job = new Job(this, this.name, scheduler.name as NameType, scheduler.template.data as DataType,
      scheduler.template.opts, scheduler.nextJobId);
    job.priority = template.opts?.priority ?? 0;
    return job;
  }

  /** Delete a scheduler and its pending run's job if still delayed; false when there was none. */
  async removeJobScheduler(schedulerId: string): Promise<boolean> {
    const body = await this.connection.request<{ removed: boolean }>('schedule_remove', { queue: this.name, key: schedulerId });
    return body.removed === true;
  }

  /** One scheduler of this queue, or undefined (reads the queue's list). */
  async getJobScheduler(schedulerId: string): Promise<JobSchedulerJson<DataType> | undefined> {
    return (await listSchedulers(this.connection, this.name, this.serializer)).find((s) => s.key === schedulerId);
  }

  /** This queue's schedulers by next run (`asc` false: latest first, as BullMQ), `start..end` inclusive. */
  async getJobSchedulers(start = 0, end = -1, asc = false): Promise<JobSchedulerJson<DataType>[]> {
    return pageByNextRun(await listSchedulers(this.connection, this.name, this.serializer), start, end, asc);
  }

  getJobSchedulersCount(): Promise<number> { return countSchedulers(this.connection, this.name); }

  /**
   * Let at most `max` of this queue's jobs start in any window of `duration` ms, across every
   * worker (the broker enforces it; it is stored with the queue until removed).
   *
   * @throws BrokerError `BAD_ARGUMENT` (`rate.max` outside 1..1,000,000, `rate.period_ms`
   *   outside 1..2,678,400,000).
   */
  async setGlobalRateLimit(max: number, duration: number): Promise<QueueLimits> {
    return limit(this.connection, this.name, { rate: { max, duration } });
  }

  async removeGlobalRateLimit(): Promise<QueueLimits> { return limit(this.connection, this.name, { rate: false }); }

  async getGlobalRateLimit(): Promise<{ max: number; duration: number } | null> {
    return (await limit(this.connection, this.name)).rateLimit;
  }

  /**
   * Let at most `concurrency` of this queue's jobs be active at once, across every worker.
   *
   * @throws BrokerError `BAD_ARGUMENT` (`concurrency` outside 1..1,000,000).
   */
  async setGlobalConcurrency(concurrency: number): Promise<QueueLimits> {
    return limit(this.connection, this.name, { concurrency });
  }

  async removeGlobalConcurrency(): Promise<QueueLimits> { return limit(this.connection, this.name, { concurrency: false }); }

  async getGlobalConcurrency(): Promise<number | null> { return (await limit(this.connection, this.name)).concurrency; }

  /** jobwire: the queue's rate and concurrency limits and its "not now" pause. */
  getLimits(): Promise<QueueLimits> { return limit(this.connection, this.name); }

  /**
   * Ms until the queue may start a job again as far as rate limiting goes: the later of the
   * "not now" pause of `worker.rateLimit(ms)` and the moment a full rate-limit window next has
   * room (0: a job may start now; client clock against the broker's times). A full concurrency
   * limit is not counted.
   */
  async getRateLimitTtl(): Promise<number> {
    const limits = await limit(this.connection, this.name);
    const until = Math.max(limits.pausedUntil ?? 0, limits.rateFreeAt ?? 0);
    return Math.max(0, until - Date.now());
  }

  /** Wait for adds already made, then close the connection (if this queue opened it). */
  close(): Promise<void> {
    this.closing ??= (async () => {
      if (this.flushScheduled) this.flushAdds();
      // A duplicate's read starts once its enqueue is answered: wait for those too.
      while (this.inflight.size > 0) await Promise.allSettled([...this.inflight]);
      this.connection.off('lost', this.onLost);
      this.connection.off('error', this.onConnectionError);
      if (this.ownsConnection) await this.connection.close();
    })();
    return this.closing;
  }
}
