/**
 * Batched outcomes: the worker's acks, fails and hand-backs.
 *
 * Processors that finish in the same turn of the event loop put their outcomes in one buffer;
 * one `setImmediate` flush sends all completions as one `ack` request, all failures as one `fail`
 * and all hand-backs as one `release` (at most the broker's `max_batch` items each). The broker's
 * group commit merges requests that arrive during a commit, so nothing is held back for longer.
 * Each item's outcome decides what happens next: `OK` fires the worker's events; `STALE_LEASE` /
 * `NOT_FOUND` (the lease expired, the broker restarted, the job was removed) is counted and
 * logged, never thrown; a request lost with the connection is counted too (the broker gives
 * those jobs to a worker again: at-least-once delivery).
 */

import { toNumber, wireInt } from './codec.js';
import type { Connection } from './connection.js';
import { ConnectionLostError, UnrecoverableError } from './errors.js';
import type { RateLimitError } from './flow.js';
import type { Job } from './job.js';
import type { Logger } from './log.js';

export type OutcomeKind = 'ack' | 'fail' | 'release';

/** One job's outcome, waiting to be sent. */
export interface Outcome {
  kind: OutcomeKind;
  job: Job;
  /** The wire item: `[id, token, ...]`. */
  item: unknown[];
  /** The processor's return value (ack) or error (fail). */
  value?: unknown;
}

/** What the buffer tells its worker. */
export interface OutcomeSink {
  /** The broker recorded the outcome; `state` is its answer (e.g. `completed`, `delayed`). */
  accepted(outcome: Outcome, state: unknown): void;
  /** The broker refused the item (`code`), or the request was lost (`code` undefined). */
  refused(outcome: Outcome, code: string | undefined, message: string): void;
}

/** Counters of outcomes the broker did not take. */
export interface OutcomeCounters {
  /** Outcomes refused with `STALE_LEASE` or `NOT_FOUND`. */
  stale: number;
  /** Outcomes whose request was lost with the connection. */
  lost: number;
}

export class OutcomeBuffer {
  readonly counters: OutcomeCounters = { stale: 0, lost: 0 };
  private buffered: Record<OutcomeKind, Outcome[]> = { ack: [], fail: [], release: [] };
  private scheduled = false;
  private readonly inflight = new Set<Promise<void>>();

  constructor(
    private readonly connection: Connection,
    private readonly sink: OutcomeSink,
    private readonly logger: Logger,
  ) {}

  push(outcome: Outcome): void {
    this.buffered[outcome.kind].push(outcome);
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.flush());
    }
  }

  /** Send what is buffered and resolve when every outcome sent so far is answered. */
  async settle(): Promise<void> {
    this.flush();
    while (this.inflight.size > 0) await Promise.allSettled([...this.inflight]);
  }

  private flush(): void {
    this.scheduled = false;
    const maxBatch = this.connection.server?.maxBatch ?? 10_000;
    for (const kind of ['ack', 'fail', 'release'] as const) {
      const outcomes = this.buffered[kind];
      if (outcomes.length === 0) continue;
      this.buffered[kind] = [];
      for (let start = 0; start < outcomes.length; start += maxBatch) {
        this.send(kind, outcomes.slice(start, start + maxBatch));
      }
    }
  }

  private send(kind: OutcomeKind, outcomes: Outcome[]): void {
    const request = this.connection.request<{ results: unknown[][] }>(kind, {
      items: outcomes.map((outcome) => outcome.item),
    }).then((body) => {
      body.results.forEach((result, index) => {
        const outcome = outcomes[index]!;
        if (result[0] === 'OK') {
          this.sink.accepted(outcome, typeof result[1] === 'bigint' ? toNumber(result[1]) : result[1]);
          return;
        }
        const code = String(result[0]);
        if (code === 'STALE_LEASE' || code === 'NOT_FOUND') {
          this.counters.stale += 1;
          this.logger.debug(`${kind} of job ${outcome.job.id} refused: ${code} (the job is no longer this worker's)`);
        }
        this.sink.refused(outcome, code, String(result[1]));
      });
    }, (error: Error) => {
      if (error instanceof ConnectionLostError) this.counters.lost += outcomes.length;
      this.logger.debug(`${kind} of ${outcomes.length} job(s) not answered: ${error.message}`);
      for (const outcome of outcomes) this.sink.refused(outcome, undefined, error.message);
    });
    this.inflight.add(request);
    void request.finally(() => this.inflight.delete(request));
  }
}

const MAX_ERROR_LEN = 65_536;
/** The longest `release` delay the broker takes (SPEC §8.16). */
const MAX_DELAY_MS = 315_360_000_000;

/** A processor's throw as a `fail` (retried unless it is an `UnrecoverableError`). */
export function failOutcome(job: Job, thrown: unknown): Outcome {
  const error = thrown instanceof Error ? thrown : new Error(String(thrown));
  let text = error.stack && error.stack.includes(error.message) ? error.stack : `${error.name}: ${error.message}`;
  if (text.length > MAX_ERROR_LEN) text = `${text.slice(0, 2000)}\n[... cut ...]\n${text.slice(-(MAX_ERROR_LEN - 2020))}`;
  const retry = !(error instanceof UnrecoverableError || error.name === 'UnrecoverableError');
  return { kind: 'fail', job, value: error, item: [job.id, job.token, text, retry] };
}

/**
 * A processor's `RateLimitError` as a `release` ("not now", the attempt not counted): for the
 * `limitedFor` ms left of `worker.rateLimit(ms)` with the queue paused meanwhile, else for the
 * error's own `delay`, this job only.
 */
export function notNowOutcome(job: Job, error: RateLimitError, limitedFor: number): Outcome {
  const own = typeof error.delay === 'number' && error.delay > 0 ? error.delay : 0;
  const delay = Math.min(MAX_DELAY_MS, Math.round(Math.max(limitedFor, own)));
  return { kind: 'release', job, value: error, item: [job.id, job.token, wireInt(delay, 'delay'), limitedFor > 0] };
}
