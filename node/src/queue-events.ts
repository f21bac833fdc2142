/**
 * BullMQ's `QueueEvents`, over the broker's event stream (SPEC §8.21, §8.22, §10.1).
 *
 * Theory of operation: a QueueEvents subscribes to one queue's job events on its connection
 * (its own, unless a `Connection` is passed) and turns each event the broker pushes into the
 * BullMQ event of the same meaning (`completed`, `failed`, `active`...), plus the raw event on
 * `event`. The broker sends an event only after the write it describes committed, in `seq`
 * order.
 *
 * A subscription's first `events` message can be read in the same socket chunk as the reply to
 * `subscribe`, before the code awaiting that reply runs: while a `subscribe` is in flight every
 * batch is kept (at most `MAX_EARLY`), and the reply's `sub` claims its own.
 *
 * Gaps: a subscriber that falls behind loses events; the broker replaces them by one `lagged`
 * event (`dropped`: how many). Subscriptions end with their connection: on a reconnect this
 * object subscribes again and emits `lagged` with `dropped: null` (events of the time between
 * are lost, their number unknown). Either way, every `waitUntilFinished` following this object
 * asks the broker for its job's state again (`get`), so none waits for an event it missed.
 *
 * `follow()` (used by `job.waitUntilFinished(queueEvents)`) is race-free: it registers the job,
 * waits until the subscription is in place, then reads the job's state. A finish before the
 * subscription shows in that read; a finish after it comes as an event.
 *
 * Invariants: `sub` is the id of the current subscription, or null; only batches of `sub` are
 * dispatched, in the order they arrived; after `close()` nothing is emitted and no follower waits.
 */

import { EventEmitter } from 'node:events';

import { toNumber } from './codec.js';
import { Connection, type ConnectionInput } from './connection.js';
import { BrokerError, ConnectionClosedError, ConnectionLostError, WaitTimeoutError } from './errors.js';
import type { FinishedOutcome, JobFollower } from './job.js';
import { defaultLogger, type Logger } from './log.js';
import { fromWireValue, getSerializer, type Serializer } from './serializer.js';

/** The broker's event kinds (SPEC §9.8), `lagged` aside: it is always delivered. */
export type EventKind =
  | 'added' | 'waiting' | 'active' | 'progress' | 'completed' | 'failed' | 'delayed'
  | 'lease_expired' | 'released' | 'removed' | 'paused' | 'resumed' | 'drained';

/** One broker event, as it came (times in ms since the epoch). */
export interface JobEvent {
  seq: number;
  kind: EventKind | 'lagged';
  time: number;
  queue: string | null;
  jobId: string | null;
  name: string | null;
  /** The kind's own keys (`attempt`, `error`, `will_retry`, `run_at`, `max_attempts`, `dropped`...). */
  fields: Record<string, unknown>;
}

export interface QueueEventsOptions {
  /** `jobwire://[token@]host:port`, connection options, or a `Connection` to share. */
  connection?: ConnectionInput;
  /** Subscribe at once (default true); otherwise call `run()`. */
  autorun?: boolean;
  /**
   * The broker kinds to receive (default: all). Fewer kinds mean fewer messages; without
   * `completed`, `failed` and `lease_expired`, `waitUntilFinished` uses the broker's `wait`.
   */
  kinds?: EventKind[];
  /** How `completed` results are decoded (default msgpack, as Queue and Worker). */
  serializer?: Serializer | 'msgpack' | 'json';
  logger?: Logger;
}

/** The listeners QueueEvents calls, with BullMQ's argument shapes; `id` is the event's `seq`. */
export interface QueueEventsListener {
  added: (args: { jobId: string; name: string }, id: string) => void;
  waiting: (args: { jobId: string; prev?: string }, id: string) => void;
  active: (args: { jobId: string; prev?: string; attempt: number }, id: string) => void;
  progress: (args: { jobId: string; data: unknown }, id: string) => void;
  completed: (args: { jobId: string; returnvalue: unknown; prev?: string; attempt: number }, id: string) => void;
  failed: (args: { jobId: string; failedReason: string; prev?: string; attemptsMade: number }, id: string) => void;
  /**
   * A failure for good that used up the job's attempts (`attemptsMade >= attempts`; not for an
   * `UnrecoverableError` with attempts left); emitted just before its `failed`. Needs a broker
   * whose failed events carry `max_attempts` (SPEC §9.8).
   */
  'retries-exhausted': (args: { jobId: string; attemptsMade: number }, id: string) => void;
  /** jobwire: an attempt failed and the job will run again (BullMQ emits nothing for it). */
  retrying: (args: { jobId: string; failedReason: string; attemptsMade: number; runAt: number | null }, id: string) => void;
  delayed: (args: { jobId: string; delay: number }, id: string) => void;
  stalled: (args: { jobId: string }, id: string) => void;
  removed: (args: { jobId: string; prev?: string; reason: string }, id: string) => void;
  drained: (id: string) => void;
  paused: (args: Record<string, never>, id: string) => void;
  resumed: (args: Record<string, never>, id: string) => void;
  /** jobwire: events were lost (`dropped`: how many; null after a reconnect: unknown). */
  lagged: (args: { dropped: number | null }, id: string) => void;
  /** jobwire: every broker event, as it came. */
  event: (event: JobEvent) => void;
  error: (error: Error) => void;
}

/** Batches kept while a `subscribe` is in flight (see the module comment). */
const MAX_EARLY = 1024;
/** Pause before subscribing again after an `OVERLOADED` answer (ms). */
const RETRY_MS = 1000;

interface EventBatch { sub: number; events: Record<string, unknown>[] }

interface Follower {
  check: () => Promise<FinishedOutcome | null>;
  resolve: (outcome: FinishedOutcome) => void;
  reject: (error: Error) => void;
  timer: NodeJS.Timeout | null;
}

const FINISH_KINDS: EventKind[] = ['completed', 'failed', 'lease_expired'];

export interface QueueEvents {
  on<U extends keyof QueueEventsListener>(event: U, listener: QueueEventsListener[U]): this;
  once<U extends keyof QueueEventsListener>(event: U, listener: QueueEventsListener[U]): this;
  off<U extends keyof QueueEventsListener>(event: U, listener: QueueEventsListener[U]): this;
}

/** One queue's job events, as BullMQ's `QueueEvents`; see the module comment. */
export class QueueEvents extends EventEmitter implements JobFollower {
  readonly connection: Connection;
  readonly serializer: Serializer;
  /** The current subscription's id (null while not subscribed). */
  sub: number | null = null;
  /** The `seq` of the last event received (0 before the first). */
  lastSeq = 0;
  /** Events received, `lagged` events and the events they said were lost (known counts). */
  readonly stats = { events: 0, lagged: 0, dropped: 0, resubscribes: 0 };

  private readonly kinds: EventKind[] | undefined;
  private readonly ownsConnection: boolean;
  private readonly logger: Logger;
  private early: EventBatch[] | null = null;
  private readonly followers = new Map<string, Set<Follower>>();
  private running: Promise<void> | null = null;
  private ready: Promise<void> | null = null;
  private readyResolve: () => void = () => undefined;
  private readyReject: (error: Error) => void = () => undefined;
  /** A subscribe loop is running (at most one: two would make two subscriptions). */
  private subscribing = false;
  /** A subscription was lost since the last `lagged` said so. */
  private gap = false;
  private closing: Promise<void> | null = null;
  private stopped: (() => void) | null = null;
  private readonly onEvents = (body: Record<string, unknown>): void => this.receive(body);
  private readonly onLost = (): void => {
    if (this.closing || !this.running) return;
    if (this.sub !== null) {
      this.sub = null;
      this.gap = true;
    }
    this.emitError(new ConnectionLostError(`queue events ${this.name}: connection lost; subscribing again`));
    this.subscribeLoop();
  };

  constructor(readonly name: string, opts: QueueEventsOptions = {}) {
    super();
    if (typeof name !== 'string' || name.length === 0) throw new TypeError('QueueEvents: a queue name is required');
    const { connection, owned } = Connection.from(opts.connection, opts.logger);
    this.connection = connection;
    this.ownsConnection = owned;
    this.serializer = getSerializer(opts.serializer);
    this.logger = opts.logger ?? defaultLogger;
    this.kinds = opts.kinds === undefined ? undefined : [...new Set(opts.kinds)];
    if (opts.autorun ?? true) void this.run().catch(() => undefined);
  }

  /** Subscribe (if not yet); resolves when closed. A refused subscription rejects. */
  run(): Promise<void> {
    if (this.closing) return Promise.reject(new ConnectionClosedError('QueueEvents is closed'));
    if (this.running) return this.running;
    this.connection.on('events', this.onEvents);
    this.connection.on('lost', this.onLost);
    const stopped = new Promise<void>((resolve) => { this.stopped = resolve; });
    this.ready = new Promise<void>((resolve, reject) => {
      this.readyResolve = resolve;
      this.readyReject = reject;
    });
    this.ready.catch(() => undefined);
    this.running = this.ready.then(() => stopped);
    this.subscribeLoop();
    return this.running;
  }

  /** Resolves once the first subscription is in place (starts it when `autorun` was false). */
  async waitUntilReady(): Promise<void> {
    if (!this.ready) void this.run().catch(() => undefined);
    await this.ready;
  }

  /** Unsubscribe, settle nothing more, and close the connection if this object opened it. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.connection.off('events', this.onEvents);
      this.connection.off('lost', this.onLost);
      const closed = new ConnectionClosedError(`queue events ${this.name} closed`);
      this.readyReject(closed);
      for (const [jobId, set] of [...this.followers]) for (const follower of set) this.settle(follower, jobId, closed);
      const sub = this.sub;
      this.sub = null;
      if (sub !== null && this.connection.connected) {
        await this.connection.request('unsubscribe', { sub }).catch(() => undefined);
      }
      if (this.ownsConnection) await this.connection.close();
      this.stopped?.();
    })();
    return this.closing;
  }

  /**
   * For `job.waitUntilFinished`: the outcome of job `id` of `queue`, or null when this object
   * cannot follow it (another queue, or kinds without the finishing ones).
   */
  follow(queue: string, id: string, check: () => Promise<FinishedOutcome | null>, ttl?: number): Promise<FinishedOutcome> | null {
    if (this.closing || queue !== this.name) return null;
    if (this.kinds && !FINISH_KINDS.every((kind) => this.kinds!.includes(kind))) return null;
    return new Promise<FinishedOutcome>((resolve, reject) => {
      const follower: Follower = { check, resolve, reject, timer: null };
      let set = this.followers.get(id);
      if (!set) this.followers.set(id, set = new Set());
      set.add(follower);
      if (ttl !== undefined) {
        follower.timer = setTimeout(() => this.settle(follower, id,
          new WaitTimeoutError(`job ${id} did not finish within ${ttl} ms`)), Math.max(0, ttl));
      }
      this.waitUntilReady().then(() => this.recheck(follower, id),
        (error: Error) => this.settle(follower, id, error));
    });
  }

  private async subscribe(): Promise<void> {
    const args: Record<string, unknown> = { queues: [this.name] };
    if (this.kinds) args.kinds = this.kinds;
    this.early = [];
    let body: { sub: unknown };
    try {
      body = await this.connection.request<{ sub: unknown }>('subscribe', args);
    } catch (error) {
      this.early = null;
      throw error;
    }
    const early = this.early ?? [];
    this.early = null;
    if (this.closing) {
      await this.connection.request('unsubscribe', { sub: body.sub }).catch(() => undefined);
      return;
    }
    this.sub = toNumber(body.sub);
    for (const batch of early) if (batch.sub === this.sub) this.dispatch(batch.events);
  }

  /**
   * Subscribe, retrying while the broker is away (the connection paces its reconnects) or
   * overloaded; then resolve `ready`, and after a lost subscription emit `lagged`.
   */
  private subscribeLoop(): void {
    if (this.closing || this.subscribing) return;
    this.subscribing = true;
    const attempt = (): void => {
      if (this.closing) {
        this.subscribing = false;
        return;
      }
      this.subscribe().then(() => {
        this.subscribing = false;
        if (this.closing) return;
        this.readyResolve();
        if (this.gap) {
          this.gap = false;
          this.stats.resubscribes += 1;
          this.lagged(null, String(this.lastSeq));
        }
      }, (error: Error) => {
        if (this.closing) {
          this.subscribing = false;
        } else if (error instanceof ConnectionLostError) {
          this.logger.debug(`queue events ${this.name}: subscribe failed (${error.message}); retrying`);
          setImmediate(attempt);
        } else if (error instanceof BrokerError && error.code === 'OVERLOADED') {
          setTimeout(attempt, RETRY_MS);
        } else {
          this.subscribing = false;
          this.emitError(error);
          this.readyReject(error);
        }
      });
    };
    attempt();
  }

  private receive(body: Record<string, unknown>): void {
    const batch: EventBatch = { sub: toNumber(body.sub), events: (body.events ?? []) as Record<string, unknown>[] };
    if (this.sub !== null && batch.sub === this.sub) {
      this.dispatch(batch.events);
    } else if (this.early) {
      this.early.push(batch);
      if (this.early.length > MAX_EARLY) this.early.shift();
    }
  }

  private dispatch(events: Record<string, unknown>[]): void {
    for (const raw of events) {
      const event = toJobEvent(raw);
      this.stats.events += 1;
      this.lastSeq = event.seq;
      this.safeEmit('event', event);
      this.translate(event);
    }
  }

  /** Emit the BullMQ event(s) for one broker event, and settle the followers it finishes. */
  private translate(event: JobEvent): void {
    const id = String(event.seq);
    const jobId = event.jobId ?? '';
    const f = event.fields;
    const attempt = toNumber(f.attempt ?? 0);
    switch (event.kind) {
      case 'added':
        this.safeEmit('added', { jobId, name: event.name ?? '' }, id);
        if (f.state === 'waiting') this.safeEmit('waiting', { jobId }, id);
        break;
      case 'waiting':
        this.safeEmit('waiting', { jobId, prev: 'delayed' }, id);
        break;
      case 'active':
        this.safeEmit('active', { jobId, prev: 'waiting', attempt }, id);
        break;
      case 'progress':
        this.safeEmit('progress', { jobId, data: fromWireValue(f.progress) }, id);
        break;
      case 'completed': {
        const returnvalue = this.decode(f.result);
        this.finish(jobId, { completed: true, returnvalue });
        this.safeEmit('completed', { jobId, returnvalue, prev: 'active', attempt }, id);
        break;
      }
      case 'failed':
      case 'lease_expired': {
        const failedReason = String(f.error ?? '').split('\n', 1)[0]!;
        if (event.kind === 'lease_expired') this.safeEmit('stalled', { jobId }, id);
        if (f.will_retry === true) {
          const runAt = f.run_at === null || f.run_at === undefined ? null : toNumber(f.run_at);
          this.safeEmit('retrying', { jobId, failedReason, attemptsMade: attempt, runAt }, id);
          if (runAt === null || runAt <= event.time) this.safeEmit('waiting', { jobId, prev: 'failed' }, id);
        } else {
          this.finish(jobId, { completed: false, failedReason });
          if (f.max_attempts !== null && f.max_attempts !== undefined && attempt >= toNumber(f.max_attempts)) {
            this.safeEmit('retries-exhausted', { jobId, attemptsMade: attempt }, id);
          }
          this.safeEmit('failed', { jobId, failedReason, prev: 'active', attemptsMade: attempt }, id);
        }
        break;
      }
      case 'delayed':
        this.safeEmit('delayed', { jobId, delay: toNumber(f.run_at) }, id);
        break;
      case 'released':
        if (toNumber(f.run_at ?? 0) <= event.time) this.safeEmit('waiting', { jobId, prev: 'active' }, id);
        break;
      case 'removed': {
        const reason = String(f.reason ?? 'cancelled');
        this.finish(jobId, new BrokerError('NOT_FOUND', `job ${jobId} was removed (${reason})`));
        this.safeEmit('removed', { jobId, reason }, id);
        break;
      }
      case 'drained':
        this.safeEmit('drained', id);
        break;
      case 'paused':
      case 'resumed':
        this.safeEmit(event.kind, {}, id);
        break;
      case 'lagged':
        this.lagged(f.dropped === null || f.dropped === undefined ? null : toNumber(f.dropped), id);
        break;
      default:
        break; // a kind this client does not know: only on `event`
    }
  }

  /** Events were lost: count, tell the application, and re-read every followed job. */
  private lagged(dropped: number | null, id: string): void {
    this.stats.lagged += 1;
    if (dropped !== null) this.stats.dropped += dropped;
    this.safeEmit('lagged', { dropped }, id);
    for (const [jobId, set] of this.followers) for (const follower of set) this.recheck(follower, jobId);
  }

  private recheck(follower: Follower, jobId: string): void {
    follower.check().then((outcome) => { if (outcome) this.settle(follower, jobId, outcome); },
      (error: Error) => this.settle(follower, jobId, error));
  }

  private finish(jobId: string, outcome: FinishedOutcome | Error): void {
    const set = this.followers.get(jobId);
    if (!set) return;
    for (const follower of set) this.settle(follower, jobId, outcome);
  }

  private settle(follower: Follower, jobId: string, outcome: FinishedOutcome | Error): void {
    const set = this.followers.get(jobId);
    if (!set?.has(follower)) return;
    set.delete(follower);
    if (set.size === 0) this.followers.delete(jobId);
    if (follower.timer) clearTimeout(follower.timer);
    if (outcome instanceof Error) follower.reject(outcome);
    else follower.resolve(outcome);
  }

  private decode(result: unknown): unknown {
    if (!(result instanceof Uint8Array)) return null;
    try {
      return this.serializer.deserialize(result);
    } catch {
      return Buffer.from(result); // a result some other client encoded differently
    }
  }

  /** Emit without letting a listener's exception reach the connection's socket handler. */
  private safeEmit(event: string, ...args: unknown[]): void {
    try {
      this.emit(event, ...args);
    } catch (error) {
      if (event === 'error') this.logger.warn(`queue events ${this.name}: an error listener threw: ${String(error)}`);
      else this.emitError(error instanceof Error ? error : new Error(String(error)));
    }
  }

  private emitError(error: Error): void {
    if (this.listenerCount('error') > 0) this.safeEmit('error', error);
    else this.logger.warn(`queue events ${this.name}: ${error.message}`);
  }
}

function toJobEvent(raw: Record<string, unknown>): JobEvent {
  const { seq, kind, time, queue, job_id: jobId, name, ...fields } = raw;
  return {
    seq: toNumber(seq ?? 0), kind: String(kind) as JobEvent['kind'], time: toNumber(time ?? 0),
    queue: queue === null || queue === undefined ? null : String(queue),
    jobId: jobId === null || jobId === undefined ? null : String(jobId),
    name: name === null || name === undefined ? null : String(name),
    fields,
  };
}
