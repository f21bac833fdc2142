/**
 * The worker runtime: BullMQ's `Worker`, over `reserve`, `ack`/`fail`/`release` and `extend`.
 *
 * Theory of operation: every job the worker holds is in `held` (keyed by lease token) from its
 * reservation until the broker answered its outcome. `pump()` runs once per turn of the event
 * loop in which something changed (a job finished, a reserve came back, the connection came
 * back, `resume()`), so jobs that finish together free their slots together, and asks with a
 * long-poll `reserve` for `free = min(concurrency + prefetch - running - ready, maxHeld - held)
 * - asked` jobs. Jobs start as soon as their reserve reply arrives while fewer than
 * `concurrency` run; the rest (at most `prefetch`) wait in `ready` and start as slots free, so
 * the broker prepares the next batch while this one runs instead of the two taking turns. A
 * second reserve may overlap the first only while the worker is busy (the last reserve brought
 * jobs) and a quarter of the slots are free, so a busy worker keeps its pipe full and an idle one
 * holds one long-poll.
 *
 * A finished processor's outcome goes to the `OutcomeBuffer` (one ack/fail request per turn of
 * the event loop). One timer extends, in one `extend` request, every held job (outcomes not yet
 * answered included) whose lease was last renewed a third of `lockDuration` ago. A refused
 * extension marks the job lost: its outcome will be refused too, and is counted, not thrown.
 *
 * The connection reconnects by itself (capped, jittered backoff). Leases die with the connection
 * that took them (SPEC §11.4), so outcomes of jobs held across a reconnect are refused
 * (`STALE_LEASE`/`NOT_FOUND`): counted in `stats`, logged, never thrown. A `draining` event stops
 * reserving until the connection comes back.
 *
 * `close()`: stop reserving, wait for the reserves still out (a parked one is answered within
 * `drainDelay`) and hand back with `release` (attempt not counted) the jobs they bring and the
 * jobs waiting in `ready`, let running processors finish (`close(true)`: hand them back at once
 * instead), wait for outcome replies, close the connection. `rateLimit(ms)` does the same to
 * `ready` and reserves nothing until `limitUntil` (and pauses the queue on the broker for every
 * worker: `pause` with `for_ms`); a `RateLimitError` is a delayed `release`.
 *
 * Invariants: `running <= concurrency`; `ready.length <= prefetch` (outside a shrinking
 * moment after `pause()`); `held.size + asked <= maxHeld`; each held job gets
 * exactly one outcome from this worker (ack, fail or release).
 */

import { EventEmitter } from 'node:events';

import { Connection, type ConnectionInput } from './connection.js';
import { BrokerError, ConnectionClosedError, ConnectionLostError, UnrecoverableError } from './errors.js';
import { Job, type JobOwner } from './job.js';
import { defaultLogger, type Logger } from './log.js';
import { checkLimiter, isRateLimitError, limit, pauseQueueFor, RateLimitError, type RateLimiterOptions } from './flow.js';
import { failOutcome, notNowOutcome, OutcomeBuffer, type Outcome } from './outcomes.js';
import { getSerializer, type Serializer } from './serializer.js';

/** What runs a job: its return value is the job's result; a throw fails the attempt. */
export type Processor<DataType = any, ResultType = any, NameType extends string = string> =
  (job: Job<DataType, ResultType, NameType>, token?: string) => Promise<ResultType> | ResultType;

export interface WorkerOptions {
  connection?: ConnectionInput;
  /** Jobs processed at once (default 1, as BullMQ). */
  concurrency?: number;
  /** Start at once (default true); otherwise call `run()`. */
  autorun?: boolean;
  /** Lease length in ms (default 30,000); the worker renews it while a job runs. */
  lockDuration?: number;
  /** Seconds a reserve waits at the broker when the queue is empty (default 5, as BullMQ). */
  drainDelay?: number;
  /**
   * Jobs reserved ahead of free slots, started as slots free (default: `concurrency`; 0: none).
   * Their leases are renewed like running jobs'; `close()` and `pause()` hand them back.
   */
  prefetch?: number;
  /** Jobs held at most, running or waiting for their outcome's reply (default 8 × concurrency). */
  maxHeld?: number;
  /**
   * BullMQ's rate limiter: at most `max` of the queue's jobs start in any window of `duration`
   * ms. jobwire sets it on the queue at `run()` (the `limit` operation): the broker enforces it
   * for every worker of the queue, and it stays after this worker closes (until
   * `queue.removeGlobalRateLimit()`); the last worker to start sets it.
   */
  limiter?: RateLimiterOptions;
  serializer?: Serializer | 'msgpack' | 'json';
  logger?: Logger;
}

/** Counters since the worker started. */
export interface WorkerStats {
  completed: number;
  failed: number;
  /** Jobs handed back with `release` (closing), attempt not counted. */
  released: number;
  /** Outcomes refused because the lease was stale or the job gone. */
  staleOutcomes: number;
  /** Outcomes whose request was lost with the connection. */
  lostOutcomes: number;
  /** Lease extensions the broker refused. */
  leasesLost: number;
  /** Jobs given back "not now" (`RateLimitError`), attempt not counted. */
  rateLimited: number;
}

interface Held {
  job: Job;
  renewedAt: number;
  running: boolean;
  /** An outcome was buffered for it: it gets no other. */
  settled: boolean;
}

export class Worker<DataType = any, ResultType = any, NameType extends string = string>
  extends EventEmitter implements JobOwner {
  readonly connection: Connection;
  readonly serializer: Serializer;
  readonly concurrency: number;
  readonly lockDuration: number;
  private readonly drainDelayMs: number;
  private readonly maxHeld: number;
  private readonly prefetch: number;
  /** Reserved jobs waiting for a slot (at most `prefetch`). */
  private ready: Held[] = [];
  private readonly ownsConnection: boolean;
  private readonly logger: Logger;
  private readonly outcomes: OutcomeBuffer;
  private readonly held = new Map<bigint, Held>();
  private running = 0;
  private asked = 0;
  private reserves = new Set<Promise<void>>();
  private busy = false;
  private hadJobs = false;
  private started = false;
  private paused = false;
  private brokerDraining = false;
  private closing: Promise<void> | null = null;
  private reportedFailure = false;
  private pumpScheduled = false;
  /** A `lost` was reported on the error event since the last handshake. */
  private lostReported = false;
  private leaseTimer: NodeJS.Timeout | null = null;
  private idleWaiters: Array<() => void> = [];
  private runPromise: Promise<void> | null = null;
  private resolveRun: (() => void) | null = null;
  private counts = { completed: 0, failed: 0, released: 0, leasesLost: 0, rateLimited: 0 };
  private readonly limiter: RateLimiterOptions | undefined;
  /** `rateLimit(ms)`: no job starts before this time (ms since the epoch). */
  private limitUntil = 0;
  private limitTimer: NodeJS.Timeout | null = null;

  constructor(
    readonly name: string,
    private readonly processor: Processor<DataType, ResultType, NameType>,
    opts: WorkerOptions = {},
  ) {
    super();
    if (typeof name !== 'string' || name.length === 0) throw new TypeError('Worker: a queue name is required');
    if (typeof processor !== 'function') throw new TypeError('Worker: a processor function is required');
    this.concurrency = positiveInt(opts.concurrency ?? 1, 'concurrency');
    this.lockDuration = positiveInt(opts.lockDuration ?? 30_000, 'lockDuration');
    if (this.lockDuration < 100 || this.lockDuration > 86_400_000) {
      throw new RangeError('lockDuration: expected 100..86,400,000 ms');
    }
    this.drainDelayMs = Math.min(600_000, Math.max(0, Math.round((opts.drainDelay ?? 5) * 1000)));
    this.prefetch = opts.prefetch ?? this.concurrency;
    if (!Number.isInteger(this.prefetch) || this.prefetch < 0) throw new RangeError('prefetch: expected an integer >= 0');
    this.maxHeld = Math.max(this.concurrency + this.prefetch, opts.maxHeld ?? 8 * this.concurrency);
    this.limiter = opts.limiter === undefined ? undefined : checkLimiter(opts.limiter);
    this.logger = opts.logger ?? defaultLogger;
    const { connection, owned } = Connection.from(opts.connection, opts.logger);
    this.connection = connection;
    this.ownsConnection = owned;
    this.serializer = getSerializer(opts.serializer);
    this.outcomes = new OutcomeBuffer(connection, {
      accepted: (outcome, state) => this.onAccepted(outcome, state),
      refused: (outcome, code, message) => this.onRefused(outcome, code, message),
    }, this.logger);
    this.connection.on('draining', () => { this.brokerDraining = true; });
    this.connection.on('ready', () => {
      this.brokerDraining = false;
      this.lostReported = false;
      this.pump();
    });
    this.connection.on('lost', (cause: Error | null) => {
      // Prefetched jobs have not started and their leases died with the connection (the broker
      // counts the attempt and delivers them again): drop them rather than run them twice.
      for (const held of this.ready.splice(0)) {
        held.settled = true;
        this.held.delete(held.job.token!);
      }
      this.lostReported = true;
      this.emitError(new ConnectionLostError(
        `connection to the broker lost (${cause?.message ?? 'closed by the broker'}); reconnecting`));
    });
    this.connection.on('error', (error: Error) => this.emitError(error));
    if (opts.autorun ?? true) {
      this.run().catch((error: Error) => this.emitError(error));
    }
  }

  /** Counters since the worker started. */
  get stats(): WorkerStats {
    return {
      ...this.counts,
      staleOutcomes: this.outcomes.counters.stale,
      lostOutcomes: this.outcomes.counters.lost,
    };
  }

  /** Start taking jobs; resolves when the worker is closed. */
  run(): Promise<void> {
    if (this.started) return Promise.reject(new TypeError('Worker is already running'));
    if (this.closing) return Promise.reject(new TypeError('Worker is closed'));
    this.started = true;
    this.runPromise = new Promise((resolve) => { this.resolveRun = resolve; });
    const every = Math.max(25, Math.floor(this.lockDuration / 6));
    this.leaseTimer = setInterval(() => this.extendLeases(), every);
    this.connection.connect().then(() => this.emit('ready'), () => undefined);
    // Sent before the first reserve on the same connection, so the broker applies it first.
    if (this.limiter) limit(this.connection, this.name, { rate: this.limiter }).catch((error: Error) => this.emitError(error));
    this.pump();
    return this.runPromise;
  }

  /** BullMQ's `throw Worker.RateLimitError()` after `worker.rateLimit(ms)`. */
  static RateLimitError(): RateLimitError { return new RateLimitError(); }

  /**
   * BullMQ's `worker.rateLimit(ms)`: the broker hands out no job of this queue to any worker for
   * `ms` ms (`pause` with `for_ms`, SPEC §8.12; `queue.resume()` lifts it early), and this worker
   * takes none meanwhile (prefetched jobs are handed back). A processor then throws
   * `Worker.RateLimitError()`: its job goes back delayed for the rest of `ms` without counting
   * an attempt. With a broker that predates `for_ms` only this worker pauses until a job is
   * handed back that way. A failed request is reported on `error`; the worker's own pause holds.
   */
  async rateLimit(ms: number): Promise<void> {
    if (typeof ms !== 'number' || !(ms >= 0)) throw new RangeError('rateLimit: expected ms >= 0');
    this.limitUntil = Math.max(this.limitUntil, Date.now() + ms);
    if (Math.round(ms) >= 1) {
      await pauseQueueFor(this.connection, this.name, ms).catch((error: Error) => this.emitError(error));
    }
    this.handBackReady();
    if (this.limitTimer) clearTimeout(this.limitTimer);
    const rearm = (): void => { // setTimeout holds at most 2^31 - 1 ms
      this.limitTimer = setTimeout(() => (this.limitUntil > Date.now() ? rearm() : this.pump()),
        Math.min(this.limitUntil - Date.now(), 2 ** 31 - 1));
    };
    rearm();
  }

  /** Resolves once connected to the broker. */
  waitUntilReady(): Promise<void> {
    return this.connection.connect();
  }

  isRunning(): boolean { return this.started && this.closing === null; }
  isPaused(): boolean { return this.paused; }

  /** Stop taking new jobs (prefetched ones are handed back); running ones finish. Resolves when none runs. */
  async pause(): Promise<void> {
    this.paused = true;
    this.handBackReady();
    await this.whenIdle();
  }

  resume(): void {
    this.paused = false;
    this.pump();
  }

  /**
   * Stop: take no new jobs, hand back jobs not started, let running jobs finish (with `force`,
   * hand them back at once too), wait for outcome replies, close the connection. Safe to call
   * twice. Events: `closing`, then `closed`.
   */
  close(force = false): Promise<void> {
    this.closing ??= (async () => {
      this.emit('closing', 'closing');
      if (!this.connection.connected && this.ownsConnection) {
        // The broker is away: the leases died with the last connection and nothing sent now
        // could be answered, so stop at once rather than wait `offlineTimeoutMs` for it.
        await this.connection.close();
      }
      await Promise.allSettled([...this.reserves]);
      this.handBackReady();
      if (force) {
        // Processors cannot be cancelled: they go on, but their jobs are handed back now and
        // whatever they return later is dropped.
        for (const held of this.held.values()) if (!held.settled) this.handBack(held);
      } else {
        await this.whenIdle();
      }
      await this.outcomes.settle();
      if (this.leaseTimer) clearInterval(this.leaseTimer);
      if (this.limitTimer) clearTimeout(this.limitTimer);
      if (this.ownsConnection) await this.connection.close();
      this.emit('closed');
      this.resolveRun?.();
    })();
    return this.closing;
  }

  private whenIdle(): Promise<void> {
    if (this.running === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /**
   * Pump once the current turn of the event loop is over: processors that finish together then
   * free their slots before the next reserve, which asks for all of them at once.
   */
  private schedulePump(): void {
    if (this.pumpScheduled) return;
    this.pumpScheduled = true;
    setImmediate(() => {
      this.pumpScheduled = false;
      this.pump();
    });
  }

  private pump(): void {
    if (!this.started || this.closing || this.paused || this.brokerDraining || this.limitUntil > Date.now()) return;
    while (this.reserves.size < 2) {
      const free = Math.min(this.concurrency + this.prefetch - this.running - this.ready.length,
        this.maxHeld - this.held.size) - this.asked;
      const needed = this.reserves.size === 0 ? 1 : Math.ceil(this.concurrency / 4);
      if (free < needed || (this.reserves.size > 0 && !this.busy)) return;
      this.reserve(Math.min(free, 1000));
    }
  }

  private reserve(max: number): void {
    this.asked += max;
    const request = this.connection.request<{ jobs: unknown[][] }>('reserve', {
      queues: [this.name], max, wait_ms: this.drainDelayMs, lease_ms: this.lockDuration,
    }).then((body) => {
      this.asked -= max;
      this.reportedFailure = false;
      this.busy = body.jobs.length > 0;
      for (const item of body.jobs) this.take(Job.fromReserved(this, item));
      if (body.jobs.length > 0) this.hadJobs = true;
      else if (this.hadJobs && this.running === 0 && this.ready.length === 0) {
        this.hadJobs = false;
        this.notify('drained');
      }
    }, (error: Error) => {
      this.asked -= max;
      this.busy = false;
      if (this.closing || error instanceof ConnectionClosedError) return;
      if (this.connection.closed) {
        // A fatal handshake answer (wrong token or version): retrying cannot help.
        this.emitError(error);
        void this.close();
        return;
      }
      if (!this.reportedFailure && !(error instanceof ConnectionLostError && this.lostReported)) {
        this.reportedFailure = true;
        this.emitError(error);
      }
      if (!(error instanceof ConnectionLostError)) {
        // A refused reserve (e.g. BAD_ARGUMENT) would fail again at once: wait before retrying.
        return new Promise<void>((resolve) => setTimeout(resolve, 1000));
      }
      return undefined;
    });
    const tracked = request.finally(() => {
      this.reserves.delete(tracked);
      this.schedulePump();
    });
    this.reserves.add(tracked);
  }

  private take(job: Job): void {
    const held: Held = { job, renewedAt: Date.now(), running: false, settled: false };
    this.held.set(job.token!, held);
    if (this.closing || this.paused || this.limitUntil > Date.now()) {
      this.handBack(held);
      return;
    }
    if (this.running < this.concurrency) void this.process(held);
    else this.ready.push(held);
  }

  private handBackReady(): void {
    for (const held of this.ready.splice(0)) this.handBack(held);
  }

  private async process(held: Held): Promise<void> {
    const job = held.job as Job<DataType, ResultType, NameType>;
    held.running = true;
    this.running += 1;
    this.notify('active', job, 'waiting');
    let outcome: Outcome;
    try {
      if (job.decodeError) {
        throw new Error(`cannot decode the payload (a producer with another serializer?): ${job.decodeError.message}`);
      }
      const result = await this.processor(job, String(job.token));
      outcome = {
        kind: 'ack', job, value: result,
        item: result === undefined ? [job.id, job.token] : [job.id, job.token, this.serializer.serialize(result)],
      };
    } catch (error) {
      outcome = isRateLimitError(error) ? notNowOutcome(job, error, Math.max(0, this.limitUntil - Date.now()))
        : failOutcome(job, error);
    }
    held.running = false;
    this.running -= 1;
    if (!held.settled) {
      held.settled = true;
      this.outcomes.push(outcome);
    }
    const next = this.ready.shift();
    if (next) void this.process(next);
    else if (this.running === 0) for (const resolve of this.idleWaiters.splice(0)) resolve();
    this.schedulePump();
  }

  /** Give a job back without counting the attempt (it runs again at once elsewhere). */
  private handBack(held: Held): void {
    held.settled = true;
    this.outcomes.push({ kind: 'release', job: held.job, item: [held.job.id, held.job.token] });
  }

  private onAccepted(outcome: Outcome, state: unknown): void {
    this.held.delete(outcome.job.token!);
    const job = outcome.job;
    job.finishedOn = Date.now();
    if (outcome.kind === 'ack') {
      this.counts.completed += 1;
      job.state = 'completed';
      job.attemptsMade = job.attempt;
      job.returnvalue = outcome.value;
      this.notify('completed', job, outcome.value, 'active');
    } else if (outcome.kind === 'fail') {
      this.counts.failed += 1;
      const error = outcome.value as Error;
      job.state = state === 'failed' ? 'failed' : state === 'waiting' ? 'waiting' : 'delayed';
      job.attemptsMade = job.attempt;
      job.failedReason = error.message;
      job.stacktrace = [String(outcome.item[2])];
      this.notify('failed', job, error, 'active');
    } else if (outcome.value !== undefined) { // a RateLimitError: "not now"
      this.counts.rateLimited += 1;
      job.state = state === 'waiting' ? 'waiting' : 'delayed';
    } else {
      this.counts.released += 1;
    }
    this.schedulePump();
  }

  private onRefused(outcome: Outcome, code: string | undefined, message: string): void {
    if (code === 'PAYLOAD_TOO_LARGE' && outcome.kind === 'ack') {
      // The result does not fit: fail the job for good rather than leave it active.
      const error = new UnrecoverableError(`result too large for the broker: ${message}`);
      this.outcomes.push(failOutcome(outcome.job, error));
      return;
    }
    this.held.delete(outcome.job.token!);
    if (code !== undefined && code !== 'STALE_LEASE' && code !== 'NOT_FOUND') {
      this.emitError(new BrokerError(code, `${outcome.kind} of job ${outcome.job.id}: ${message}`));
    }
    this.schedulePump();
  }

  /** JobOwner hook: a processor's `job.updateProgress()` was recorded. */
  onProgress(job: Job, progress: unknown): void {
    this.notify('progress', job, progress);
  }

  private extendLeases(): void {
    if (!this.connection.connected || this.held.size === 0) return;
    const due = Date.now() - this.lockDuration / 3;
    const batch: Held[] = [];
    for (const held of this.held.values()) if (held.renewedAt <= due) batch.push(held);
    if (batch.length === 0) return;
    const sentAt = Date.now();
    for (const held of batch) held.renewedAt = sentAt;
    this.connection.request<{ results: unknown[][] }>('extend', {
      items: batch.map((held) => [held.job.id, held.job.token, this.lockDuration]),
    }).then((body) => {
      body.results.forEach((result, index) => {
        if (result[0] === 'OK') return;
        const held = batch[index]!;
        this.counts.leasesLost += 1;
        // The outcome will be refused too; the job leaves `held` when that answer comes.
        this.logger.debug(`lease of job ${held.job.id} lost: ${String(result[0])}`);
      });
    }, (error: Error) => {
      this.logger.debug(`extend not answered: ${error.message}`);
    });
  }

  /** Emit an event; a listener that throws is reported on `error`, never breaks the worker. */
  private notify(event: string, ...args: unknown[]): void {
    try {
      this.emit(event, ...args);
    } catch (error) {
      this.emitError(error instanceof Error ? error : new Error(String(error)));
    }
  }

  private emitError(error: Error): void {
    if (this.listenerCount('error') > 0) this.emit('error', error);
    else this.logger.warn(`worker ${this.name}: ${error.message}`);
  }
}

function positiveInt(value: number, field: string): number {
  if (!Number.isInteger(value) || value < 1) throw new RangeError(`${field}: expected an integer >= 1`);
  return value;
}
