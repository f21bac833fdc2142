/**
 * `JobwireModule`: `forRoot({ connection })` once, `registerQueue({ name, defaultJobOptions })`
 * per feature module, as `BullModule` in `@nestjs/bullmq`. Every Queue shares one connection
 * (pipelined); every `@Processor` gets its own Worker (and connection), started when the
 * application initialises and closed gracefully when it shuts down.
 */

import {
  Global, Inject, Injectable, Module, type DynamicModule, type OnApplicationShutdown,
  type OnModuleDestroy, type OnModuleInit, type Provider,
} from '@nestjs/common';
import { DiscoveryModule, DiscoveryService, MetadataScanner } from '@nestjs/core';

import { Connection, type ConnectionInput } from '../connection.js';
import type { JobsOptions } from '../options.js';
import { Queue, type QueueOptions } from '../queue.js';
import { Worker } from '../worker.js';
import {
  getQueueToken, PROCESSOR_METADATA, WORKER_EVENT_METADATA, WorkerHost, type ProcessorMetadata,
} from './decorators.js';

export const JOBWIRE_ROOT_OPTIONS = 'JOBWIRE_ROOT_OPTIONS';
export const JOBWIRE_SHARED_CONNECTION = 'JOBWIRE_SHARED_CONNECTION';

export interface JobwireRootOptions {
  /** `jobwire://[token@]host:port` or connection options. */
  connection?: string | Exclude<ConnectionInput, string | Connection>;
  /** Defaults of every queue's jobs (a queue's own defaults win, key by key). */
  defaultJobOptions?: JobsOptions;
  serializer?: QueueOptions['serializer'];
}

export interface RegisterQueueOptions {
  name: string;
  defaultJobOptions?: JobsOptions;
}

/** Starts a Worker for every `@Processor` provider and closes them on shutdown. */
@Injectable()
export class JobwireExplorer implements OnModuleInit, OnModuleDestroy {
  private readonly workers: Worker[] = [];

  constructor(
    private readonly discovery: DiscoveryService,
    private readonly scanner: MetadataScanner,
    @Inject(JOBWIRE_ROOT_OPTIONS) private readonly options: JobwireRootOptions,
  ) {}

  onModuleInit(): void {
    for (const wrapper of this.discovery.getProviders()) {
      const instance = wrapper.instance as Record<string, unknown> | undefined;
      const type = wrapper.metatype as object | undefined;
      if (!instance || !type || !wrapper.isDependencyTreeStatic()) continue;
      const meta = Reflect.getMetadata(PROCESSOR_METADATA, type) as ProcessorMetadata | undefined;
      if (!meta) continue;
      if (!(instance instanceof WorkerHost)) {
        throw new TypeError(`@Processor(${JSON.stringify(meta.name)}) class ${wrapper.name} must extend WorkerHost`);
      }
      this.workers.push(this.startWorker(instance, meta));
    }
  }

  private startWorker(host: WorkerHost, meta: ProcessorMetadata): Worker {
    const worker = new Worker(meta.name, (job, token) => host.process(job, token), {
      serializer: this.options.serializer,
      ...meta.options,
      connection: this.options.connection ?? {},
      autorun: false,
    });
    const prototype = Object.getPrototypeOf(host) as object;
    for (const method of this.scanner.getAllMethodNames(prototype)) {
      const handler = (prototype as Record<string, unknown>)[method];
      const event = typeof handler === 'function'
        ? Reflect.getMetadata(WORKER_EVENT_METADATA, handler) as string | undefined : undefined;
      if (event) worker.on(event, (...args: unknown[]) => (handler as (...a: unknown[]) => unknown).apply(host, args));
    }
    host.attachWorker(worker);
    worker.run().catch(() => undefined);
    return worker;
  }

  async onModuleDestroy(): Promise<void> {
    await Promise.all(this.workers.map((worker) => worker.close()));
  }
}

/** Closes the shared producer connection last, after the queues' adds went out. */
@Injectable()
export class JobwireConnectionCloser implements OnApplicationShutdown {
  constructor(@Inject(JOBWIRE_SHARED_CONNECTION) private readonly connection: Connection) {}

  async onApplicationShutdown(): Promise<void> {
    await this.connection.close();
  }
}

@Global()
@Module({})
export class JobwireModule {
  /** Configure the broker connection once, in the root module. */
  static forRoot(options: JobwireRootOptions = {}): DynamicModule {
    const providers: Provider[] = [
      { provide: JOBWIRE_ROOT_OPTIONS, useValue: options },
      {
        provide: JOBWIRE_SHARED_CONNECTION,
        useFactory: () => new Connection(options.connection ?? {}),
      },
      JobwireExplorer,
      JobwireConnectionCloser,
    ];
    return {
      module: JobwireModule,
      global: true,
      imports: [DiscoveryModule],
      providers,
      exports: [JOBWIRE_ROOT_OPTIONS, JOBWIRE_SHARED_CONNECTION],
    };
  }

  /** Make `@InjectQueue(name)` available in the importing module. */
  static registerQueue(...queues: RegisterQueueOptions[]): DynamicModule {
    const providers: Provider[] = queues.map((queue) => ({
      provide: getQueueToken(queue.name),
      inject: [JOBWIRE_ROOT_OPTIONS, JOBWIRE_SHARED_CONNECTION],
      useFactory: (root: JobwireRootOptions, connection: Connection) => new Queue(queue.name, {
        connection,
        serializer: root.serializer,
        defaultJobOptions: root.defaultJobOptions || queue.defaultJobOptions
          ? { ...root.defaultJobOptions, ...queue.defaultJobOptions } : undefined,
      }),
    }));
    return { module: JobwireModule, providers, exports: providers };
  }
}
