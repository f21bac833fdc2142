/**
 * Errors. Every error this package throws is a `JobwireError`; an error the broker answered has a
 * stable `code` from protocol/SPEC.md §7.
 */

/** Base class of every error this package throws. */
export class JobwireError extends Error {
  override name = 'JobwireError';
}

/** The broker refused a request; `code` is its error code (e.g. `QUEUE_FULL`, `NOT_FOUND`). */
export class BrokerError extends JobwireError {
  override name = 'BrokerError';
  constructor(readonly code: string, message: string) {
    super(`${code}: ${message}`);
  }
}

/**
 * The connection dropped (or never came up in time) while the request was pending: whether a
 * write took effect is unknown (give jobs a `jobId` so a retry cannot duplicate them).
 */
export class ConnectionLostError extends JobwireError {
  override name = 'ConnectionLostError';
}

/** The Queue, Worker or connection was closed by the application. */
export class ConnectionClosedError extends JobwireError {
  override name = 'ConnectionClosedError';
}

/** `job.waitUntilFinished(…, ttl)` ran out of time before the job finished. */
export class WaitTimeoutError extends JobwireError {
  override name = 'WaitTimeoutError';
}

/**
 * Thrown by a processor to fail the job for good, without the attempts it has left (BullMQ's
 * `UnrecoverableError`).
 */
export class UnrecoverableError extends Error {
  override name = 'UnrecoverableError';
}

/** Codes after which reconnecting cannot help (a wrong token or protocol version). */
export const FATAL_CODES: ReadonlySet<string> = new Set(['UNAUTHORIZED', 'UNSUPPORTED_VERSION']);
