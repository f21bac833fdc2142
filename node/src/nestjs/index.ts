/** `jobwire/nestjs`: the NestJS module (needs `@nestjs/common` and `@nestjs/core`). */
export {
  getQueueToken, InjectQueue, OnQueueEvent, OnWorkerEvent, Processor, QueueEventsHost,
  QueueEventsListener, WorkerHost,
} from './decorators.js';
export type { ProcessorOptions, QueueEventsListenerOptions, WorkerEvent } from './decorators.js';
export { JobwireModule } from './module.js';
export type { JobwireRootOptions, RegisterQueueOptions } from './module.js';
