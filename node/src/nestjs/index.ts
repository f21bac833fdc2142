/** `jobwire/nestjs`: the NestJS module (needs `@nestjs/common` and `@nestjs/core`). */
export {
  getQueueToken, InjectQueue, OnWorkerEvent, Processor, WorkerHost,
} from './decorators.js';
export type { ProcessorOptions, WorkerEvent } from './decorators.js';
export { JobwireModule } from './module.js';
export type { JobwireRootOptions, RegisterQueueOptions } from './module.js';
