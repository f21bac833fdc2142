/**
 * The NestJS decorators, as in `@nestjs/bullmq`: `@InjectQueue(name)`, `@Processor(name, opts)`
 * on a class extending `WorkerHost`, and `@OnWorkerEvent(event)` on its methods;
 * `@QueueEventsListener(name, opts)` on a class extending `QueueEventsHost`, and
 * `@OnQueueEvent(event)` on its methods.
 */

import { Inject, SetMetadata } from '@nestjs/common';

import type { Job } from '../job.js';
import type { QueueEvents, QueueEventsListener, QueueEventsOptions } from '../queue-events.js';
import type { Worker, WorkerOptions } from '../worker.js';

export const PROCESSOR_METADATA = 'jobwire:processor';
export const WORKER_EVENT_METADATA = 'jobwire:worker-event';
export const QUEUE_EVENTS_LISTENER_METADATA = 'jobwire:queue-events-listener';
export const QUEUE_EVENT_METADATA = 'jobwire:queue-event';

/** The injection token of the Queue registered under `name`. */
export function getQueueToken(name: string): string {
  return `JobwireQueue_${name}`;
}

/** Inject the Queue registered with `JobwireModule.registerQueue({ name })`. */
export function InjectQueue(name: string): ParameterDecorator & PropertyDecorator {
  return Inject(getQueueToken(name));
}

/** Options of `@Processor`: the Worker's options, less the connection (from `forRoot`). */
export type ProcessorOptions = Omit<WorkerOptions, 'connection' | 'autorun'>;

export interface ProcessorMetadata {
  name: string;
  options: ProcessorOptions;
}

/** Make this provider (a class extending `WorkerHost`) the processor of queue `name`. */
export function Processor(name: string, options: ProcessorOptions = {}): ClassDecorator {
  return SetMetadata(PROCESSOR_METADATA, { name, options } satisfies ProcessorMetadata);
}

/** The Worker events a method can listen to. */
export type WorkerEvent =
  | 'active' | 'completed' | 'failed' | 'progress' | 'error' | 'drained' | 'closing' | 'closed' | 'ready';

/** Call this method on the processor's Worker event `event` (with the event's arguments). */
export function OnWorkerEvent(event: WorkerEvent): MethodDecorator {
  return SetMetadata(WORKER_EVENT_METADATA, event);
}

/** Base class of a `@Processor`: implement `process(job)`; `worker` is set once it runs. */
export abstract class WorkerHost<W extends Worker = Worker> {
  private workerInstance: W | undefined;

  /** The Worker running this processor (after the application initialised). */
  get worker(): W {
    if (!this.workerInstance) throw new Error('the Worker is created when the Nest application initialises');
    return this.workerInstance;
  }

  /** @internal set by the module. */
  attachWorker(worker: W): void {
    this.workerInstance = worker;
  }

  abstract process(job: Job, token?: string): Promise<unknown>;
}

/** Options of `@QueueEventsListener`: the QueueEvents' options, less the connection (from `forRoot`). */
export type QueueEventsListenerOptions = Omit<QueueEventsOptions, 'connection' | 'autorun'>;

export interface QueueEventsListenerMetadata {
  name: string;
  options: QueueEventsListenerOptions;
}

/** Make this provider (a class extending `QueueEventsHost`) follow the events of queue `name`. */
export function QueueEventsListener(name: string, options: QueueEventsListenerOptions = {}): ClassDecorator {
  return SetMetadata(QUEUE_EVENTS_LISTENER_METADATA, { name, options } satisfies QueueEventsListenerMetadata);
}

/** Call this method on the QueueEvents event `event` (with the event's arguments). */
export function OnQueueEvent(event: keyof QueueEventsListener): MethodDecorator {
  return SetMetadata(QUEUE_EVENT_METADATA, event);
}

/** Base class of a `@QueueEventsListener`; `queueEvents` is set once the application initialised. */
export abstract class QueueEventsHost<Q extends QueueEvents = QueueEvents> {
  private queueEventsInstance: Q | undefined;

  /** The QueueEvents of this listener (after the application initialised). */
  get queueEvents(): Q {
    if (!this.queueEventsInstance) throw new Error('the QueueEvents is created when the Nest application initialises');
    return this.queueEventsInstance;
  }

  /** @internal set by the module. */
  attachQueueEvents(queueEvents: Q): void {
    this.queueEventsInstance = queueEvents;
  }
}
