/**
 * A job, shaped like BullMQ's `Job`: what the broker last said about it, and calls about it.
 * A worker's job also holds its lease token (a uint64 `bigint`) for `updateProgress`.
 */

import { toNumber } from './codec.js';
import type { Connection } from './connection.js';
import { BrokerError, WaitTimeoutError } from './errors.js';
import type { JobsOptions } from './options.js';
import { fromWireValue, toProgressValue, type Serializer } from './serializer.js';

/** The broker states (SPEC §11.1), plus BullMQ's `unknown` for a job that does not exist. */
export type JobState = 'waiting' | 'delayed' | 'active' | 'completed' | 'failed' | 'unknown';

/** What a Job needs from the Queue or Worker that made it. */
export interface JobOwner {
  readonly connection: Connection;
  readonly serializer: Serializer;
  /** A worker's hook: called after the broker recorded a progress value. */
  onProgress?(job: Job, progress: unknown): void;
}

/** How a job ended, as `waitUntilFinished` learns it (from an event or a read). */
export interface FinishedOutcome {
  completed: boolean;
  returnvalue?: unknown;
  failedReason?: string;
  /** The job's JobInfo when the outcome came from a read. */
  info?: Record<string, unknown>;
}

/** What `waitUntilFinished` can follow a job with: a `QueueEvents`. */
export interface JobFollower {
  /**
   * The outcome of job `id` of `queue` (from an event, or from `check()`, which it calls once
   * subscribed and again after events were lost); null when it cannot follow that job.
   */
  follow(queue: string, id: string, check: () => Promise<FinishedOutcome | null>, ttl?: number): Promise<FinishedOutcome> | null;
}

/** The longest single `wait` request the broker takes (SPEC §8.9). */
const MAX_WAIT_MS = 600_000;

/** The worker holding an active job's lease (SPEC §9.6 `owner`). */
export interface LeaseHolder {
  /** The broker's connection id (as the `workers` op and the gateway's /api/workers show it). */
  conn: number;
  /** Its `hello` client name; null if the connection has just closed. */
  client: string | null;
  /** Its peer address, `ip:port`; null if the connection has just closed. */
  host: string | null;
}

export class Job<DataType = any, ReturnType = any, NameType extends string = string> {
  /** The job id (broker-assigned ids are decimal strings). */
  id: string;
  /** Deliveries that ended (failed or finished); in a processor, 0 on the first run. */
  attemptsMade = 0;
  /** Deliveries started, this one included. */
  attemptsStarted = 0;
  progress: unknown = 0;
  returnvalue: ReturnType | null = null;
  /** The last error's first line (`Name: message`). */
  failedReason: string | undefined;
  /** The last error's full text (message and stack), as one entry. */
  stacktrace: string[] = [];
  /** When the job was created (ms since the epoch, broker clock). */
  timestamp: number;
  processedOn: number | undefined;
  finishedOn: number | undefined;
  priority = 0;
  /** jobwire: the state the broker last reported (`get`/`wait`); undefined for fresh adds. */
  state: JobState | undefined;
  /** jobwire: true when `add` found this `jobId` already there and created nothing. */
  duplicate = false;
  /** jobwire: the lease token of a worker's delivery (uint64). */
  token: bigint | undefined;
  /** jobwire: when the current lease ends (ms since the epoch, broker clock). */
  leaseDeadline: number | undefined;
  /**
   * The name of the worker holding an active job's lease (BullMQ's `processedBy`): its
   * connection's client name (`hostname:pid` by default). From `getJob`/`Queue` reads of an
   * active job; undefined otherwise, and with an older broker.
   */
  processedBy: string | undefined;
  /** jobwire: the lease holder in full, `{conn, client, host}` as the broker's `workers` op shows it. */
  leaseHolder: LeaseHolder | undefined;
  /** jobwire: the job's timeout (one attempt's longest run, ms), undefined when it has none. */
  timeout: number | undefined;
  /** jobwire: the delivery's number, 1 for the first. */
  attempt = 0;
  maxAttempts = 0;
  /** jobwire: why a worker could not decode this delivery's payload (it fails the attempt). */
  decodeError: Error | undefined;

  readonly #owner: JobOwner;

  constructor(
    owner: JobOwner,
    readonly queueName: string,
    readonly name: NameType,
    readonly data: DataType,
    readonly opts: JobsOptions,
    id: string,
    timestamp = Date.now(),
  ) {
    this.#owner = owner;
    this.id = id;
    this.timestamp = timestamp;
  }

  /** A job from a JobInfo map (SPEC §9.6). */
  static fromInfo(owner: JobOwner, info: Record<string, unknown>): Job {
    const serializer = owner.serializer;
    const job = new Job(owner, String(info.queue), String(info.name),
      serializer.deserialize(info.payload as Uint8Array), {}, String(info.id), toNumber(info.created_at));
    job.state = String(info.state) as JobState;
    job.priority = toNumber(info.priority);
    job.maxAttempts = toNumber(info.max_attempts);
    const started = toNumber(info.attempts);
    job.attemptsStarted = started;
    job.attemptsMade = job.state === 'active' ? Math.max(0, started - 1) : started;
    job.progress = info.progress === null || info.progress === undefined ? 0 : fromWireValue(info.progress);
    if (info.result !== null && info.result !== undefined) {
      job.returnvalue = serializer.deserialize(info.result as Uint8Array);
    }
    if (typeof info.error === 'string') {
      job.failedReason = info.error.split('\n', 1)[0];
      job.stacktrace = [info.error];
    }
    job.processedOn = optionalTime(info.started_at);
    job.finishedOn = optionalTime(info.finished_at);
    job.leaseDeadline = optionalTime(info.lease_deadline);
    job.timeout = optionalTime(info.timeout_ms);
    const holder = info.owner as Record<string, unknown> | null | undefined;
    if (holder !== null && typeof holder === 'object') {
      job.leaseHolder = {
        conn: toNumber(holder.conn),
        client: typeof holder.client === 'string' ? holder.client : null,
        host: typeof holder.host === 'string' ? holder.host : null,
      };
      job.processedBy = job.leaseHolder.client ?? undefined;
    }
    return job;
  }

  /**
   * A worker's delivery from a ReservedJob array (SPEC §9.4). A payload the serializer cannot
   * decode leaves `data` undefined and the error in `decodeError` (the worker fails the attempt).
   */
  static fromReserved(owner: JobOwner, item: unknown[]): Job {
    let data: unknown;
    let decodeError: Error | undefined;
    try {
      data = owner.serializer.deserialize(item[3] as Uint8Array);
    } catch (error) {
      decodeError = error instanceof Error ? error : new Error(String(error));
    }
    const job = new Job(owner, String(item[1]), String(item[2]), data, {}, String(item[0]), toNumber(item[9]));
    job.decodeError = decodeError;
    job.state = 'active';
    job.attempt = toNumber(item[4]);
    job.attemptsStarted = job.attempt;
    job.attemptsMade = job.attempt - 1;
    job.maxAttempts = toNumber(item[5]);
    job.token = BigInt(item[6] as bigint | number);
    job.leaseDeadline = toNumber(item[8]);
    job.timeout = optionalTime(item[11]);
    job.processedOn = Date.now();
    if (item[10] !== null && item[10] !== undefined) job.progress = fromWireValue(item[10]);
    return job;
  }

  /**
   * Record progress (a number or any plain value) for this delivery. Only a worker's job can.
   *
   * @throws BrokerError `STALE_LEASE` or `NOT_FOUND` when the job is no longer this worker's.
   */
  async updateProgress(progress: unknown): Promise<void> {
    if (this.token === undefined) {
      throw new TypeError('updateProgress: only a job a Worker is processing can report progress');
    }
    await this.#owner.connection.request('progress', {
      id: this.id, token: this.token, progress: toProgressValue(progress),
    });
    this.progress = progress;
    this.#owner.onProgress?.(this, progress);
  }

  /** The job's state now, or `'unknown'` when it no longer exists. */
  async getState(): Promise<JobState> {
    try {
      const body = await this.#owner.connection.request<{ job: Record<string, unknown> }>('get', this.address());
      return String(body.job.state) as JobState;
    } catch (error) {
      if (error instanceof BrokerError && error.code === 'NOT_FOUND') return 'unknown';
      throw error;
    }
  }

  async isCompleted(): Promise<boolean> { return (await this.getState()) === 'completed'; }
  async isFailed(): Promise<boolean> { return (await this.getState()) === 'failed'; }
  async isActive(): Promise<boolean> { return (await this.getState()) === 'active'; }
  async isDelayed(): Promise<boolean> { return (await this.getState()) === 'delayed'; }
  async isWaiting(): Promise<boolean> { return (await this.getState()) === 'waiting'; }

  /** Delete the job in any state (an active job's worker then gets `NOT_FOUND` on its ack). */
  async remove(): Promise<void> {
    await this.#owner.connection.request('cancel', this.address());
  }

  /** The job's address for `get`/`wait`/`cancel`: user ids are unique per queue (SPEC §8.8). */
  private address(): Record<string, unknown> {
    return { id: this.id, queue: this.queueName };
  }

  /**
   * Send a failed job back to waiting with its attempts reset (only `'failed'` jobs: the broker
   * has no retry of completed jobs).
   *
   * @throws BrokerError `NOT_FOUND` when the job is not a failed job of its queue.
   */
  async retry(state: 'failed' = 'failed'): Promise<void> {
    if (state !== 'failed') throw new TypeError('retry: only failed jobs can be retried');
    const body = await this.#owner.connection.request<{ not_failed: string[] }>('retry_failed', {
      queue: this.queueName, ids: [this.id],
    });
    if (body.not_failed.length > 0) {
      throw new BrokerError('NOT_FOUND', `job ${this.id} is not a failed job of queue ${this.queueName}`);
    }
  }

  /**
   * Wait until the job completed (resolves with its return value) or failed for good (rejects
   * with an Error whose message is the failure reason).
   *
   * With a `QueueEvents` of the job's queue, it follows the event stream: it subscribes first,
   * then reads the job's state, so a job that finished before the call is seen as well (and it
   * reads again after `lagged`). Without one (or a QueueEvents of another queue, or without the
   * finishing kinds), it long-polls the broker's `wait` operation on the job's own connection.
   *
   * @param ttl give up after this many ms (`WaitTimeoutError`); default: wait as long as it takes.
   * @throws BrokerError `NOT_FOUND` when the job does not exist or was removed meanwhile.
   */
  async waitUntilFinished(queueEvents?: unknown, ttl?: number): Promise<ReturnType> {
    const follower = queueEvents as Partial<JobFollower> | undefined;
    const followed = typeof follower?.follow === 'function'
      ? follower.follow(this.queueName, this.id, () => this.readFinished(), ttl) : null;
    const outcome = followed ? await followed : await this.waitFinished(ttl);
    if (outcome.info) {
      this.refreshFrom(Job.fromInfo(this.#owner, outcome.info));
    } else {
      this.state = outcome.completed ? 'completed' : 'failed';
      if (outcome.completed) this.returnvalue = outcome.returnvalue as ReturnType;
      else this.failedReason = outcome.failedReason;
    }
    if (outcome.completed) return this.returnvalue as ReturnType;
    throw new Error(this.failedReason ?? 'job failed');
  }

  /** The outcome when the job is finished now (a `get`), else null. */
  private async readFinished(): Promise<FinishedOutcome | null> {
    const body = await this.#owner.connection.request<{ job: Record<string, unknown> }>('get', this.address());
    return finishedOutcome(body.job);
  }

  /** The outcome by long-polling `wait` (SPEC §8.9), in steps of at most `MAX_WAIT_MS`. */
  private async waitFinished(ttl?: number): Promise<FinishedOutcome> {
    const deadline = ttl === undefined ? Infinity : Date.now() + ttl;
    for (;;) {
      const left = deadline - Date.now();
      const timeout = Math.max(0, Math.min(MAX_WAIT_MS, Math.ceil(left)));
      const body = await this.#owner.connection.request<{ job: Record<string, unknown> }>('wait', {
        ...this.address(), timeout_ms: timeout,
      });
      const outcome = finishedOutcome(body.job);
      if (outcome) return outcome;
      if (Date.now() >= deadline) {
        throw new WaitTimeoutError(`job ${this.id} did not finish within ${ttl} ms (state ${String(body.job.state)})`);
      }
    }
  }

  private refreshFrom(latest: Job): void {
    this.state = latest.state;
    this.attemptsMade = latest.attemptsMade;
    this.attemptsStarted = latest.attemptsStarted;
    this.progress = latest.progress;
    this.returnvalue = latest.returnvalue;
    this.failedReason = latest.failedReason;
    this.stacktrace = latest.stacktrace;
    this.processedOn = latest.processedOn;
    this.finishedOn = latest.finishedOn;
    this.leaseHolder = latest.leaseHolder;
    this.processedBy = latest.processedBy;
    this.timeout = latest.timeout;
  }

  /** A plain description (no connection), for logs and HTTP answers. */
  toJSON(): Record<string, unknown> {
    return {
      id: this.id, name: this.name, queueName: this.queueName, data: this.data, opts: this.opts,
      state: this.state, progress: this.progress, returnvalue: this.returnvalue,
      attemptsMade: this.attemptsMade, failedReason: this.failedReason, timestamp: this.timestamp,
      processedOn: this.processedOn, finishedOn: this.finishedOn, priority: this.priority,
    };
  }
}

function finishedOutcome(info: Record<string, unknown>): FinishedOutcome | null {
  if (info.state === 'completed') return { completed: true, info };
  if (info.state === 'failed') return { completed: false, info };
  return null;
}

function optionalTime(value: unknown): number | undefined {
  return value === null || value === undefined ? undefined : toNumber(value);
}
