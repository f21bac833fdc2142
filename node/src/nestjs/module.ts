/**
 * `JobwireModule`: `forRoot({ connection })` once, `registerQueue({ name, defaultJobOptions })`
 * per feature module, as `BullModule` in `@nestjs/bullmq`. Every Queue shares one connection
 * (pipelined); every `@Processor` gets its own Worker (and connection), and every
 * `@QueueEventsListener` its own QueueEvents (and connection), started when the application
 * initialises and closed gracefully when it shuts down.
 */

import {
  Global, Inject, Injectable, Module, type DynamicModule, type OnApplicationShutdown,
  type OnModuleDestroy, type OnModuleInit, type Provider,
} from '@nestjs/common';
import { DiscoveryModule, DiscoveryService, MetadataScanner } from '@nestjs/core';

import { Connection, type ConnectionInput } from '../connection.js';
import type { JobsOptions } from '../options.js';
import { QueueEvents } from '../queue-events.js';
import { Queue, type QueueOptions } from '../queue.js';
import { Worker } from '../worker.js';
import {
  getQueueToken, PROCESSOR_METADATA, QUEUE_EVENT_METADATA, QUEUE_EVENTS_LISTENER_METADATA,
  QueueEventsHost, WORKER_EVENT_METADATA, WorkerHost, type ProcessorMetadata,
  type QueueEventsListenerMetadata,
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

/**
 * Starts a Worker for every `@Processor` provider and a QueueEvents for every
 * `@QueueEventsListener` provider, and closes them on shutdown.
 */
@Injectable()
export class JobwireExplorer implements OnModuleInit, OnModuleDestroy {
  private readonly workers: Worker[] = [];
  private readonly listeners: QueueEvents[] = [];

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
      const events = Reflect.getMetadata(QUEUE_EVENTS_LISTENER_METADATA, type) as QueueEventsListenerMetadata | undefined;
      if (events) {
        if (!(instance instanceof QueueEventsHost)) {
          throw new TypeError(`@QueueEventsListener(${JSON.stringify(events.name)}) class ${wrapper.name} must extend QueueEventsHost`);
        }
        this.listeners.push(this.startListener(instance, events));
      }
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
    this.bindHandlers(host, WORKER_EVENT_METADATA, worker);
    host.attachWorker(worker);
    worker.run().catch(() => undefined);
    return worker;
  }

  private startListener(host: QueueEventsHost, meta: QueueEventsListenerMetadata): QueueEvents {
    const queueEvents = new QueueEvents(meta.name, {
      serializer: this.options.serializer,
      ...meta.options,
      connection: this.options.connection ?? {},
      autorun: false,
    });
    this.bindHandlers(host, QUEUE_EVENT_METADATA, queueEvents);
    host.attachQueueEvents(queueEvents);
    queueEvents.run().catch(() => undefined);
    return queueEvents;
  }

  /** Listen on `emitter` with every method of `host` that a decorator marked (`key`). */
  private bindHandlers(host: object, key: string, emitter: { on(event: string, listener: (...args: unknown[]) => void): unknown }): void {
    const prototype = Object.getPrototypeOf(host) as object;
    for (const method of this.scanner.getAllMethodNames(prototype)) {
      const handler = (prototype as Record<string, unknown>)[method];
      const event = typeof handler === 'function' ? Reflect.getMetadata(key, handler) as string | undefined : undefined;
      if (event) emitter.on(event, (...args: unknown[]) => (handler as (...a: unknown[]) => unknown).apply(host, args));
    }
  }

  async onModuleDestroy(): Promise<void> {
    await Promise.all([...this.workers, ...this.listeners].map((closable) => closable.close()));
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
