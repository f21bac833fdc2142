/**
 * jobwire for Node.js: a BullMQ-shaped client of the jobwire broker.
 *
 * ```ts
 * import { Queue, Worker } from 'jobwire';
 * const queue = new Queue('emails', { connection: 'jobwire://127.0.0.1:7400' });
 * await queue.add('send', { to: 'ada@example.com' }, { attempts: 3, backoff: { type: 'exponential', delay: 1000 } });
 * new Worker('emails', async (job) => send(job.data), { connection: 'jobwire://127.0.0.1:7400', concurrency: 50 });
 * ```
 */

export { Connection } from './connection.js';
export type { ConnectionInput, ConnectionOptions, ServerInfo } from './connection.js';
export {
  BrokerError, ConnectionClosedError, ConnectionLostError, JobwireError, UnrecoverableError,
  WaitTimeoutError,
} from './errors.js';
export { RateLimitError } from './flow.js';
export type { QueueLimits, RateLimiterOptions } from './flow.js';
export { Job } from './job.js';
export type { FinishedOutcome, JobFollower, JobState, LeaseHolder } from './job.js';
export type { Logger } from './log.js';
export type { BackoffOptions, JobsOptions, KeepJobs } from './options.js';
export { Queue } from './queue.js';
export type { BulkJob, JobType, QueueOptions, QueueStats } from './queue.js';
export type {
  JobSchedulerJson, JobSchedulerTemplate, JobSchedulerTemplateOptions, RepeatOptions,
} from './schedulers.js';
export { QueueEvents } from './queue-events.js';
export type { EventKind, JobEvent, QueueEventsListener, QueueEventsOptions } from './queue-events.js';
export { jsonSerializer, msgpackSerializer } from './serializer.js';
export type { Serializer } from './serializer.js';
export { DEFAULT_URL, parseUrl } from './url.js';
export { Worker } from './worker.js';
export type { Processor, WorkerOptions, WorkerStats } from './worker.js';
