/**
 * One pipelined, self-reconnecting connection to a jobwire broker.
 *
 * Theory of operation: `request(op, args)` gives a promise. When the connection is ready and
 * fewer than the broker's `max_inflight` requests are outstanding, the request gets the next
 * request id, its frame goes to the outbox and the promise waits in `pending` for the reply with
 * that id (replies come in any order). Frames queued in one turn of the event loop leave in one
 * `socket.write` (a `setImmediate` flushes the outbox, so the requests of every Queue, Worker
 * and callback sharing the connection in that turn go together; past `FLUSH_BYTES` it flushes
 * at once, so the broker starts on a large burst while the rest is still being encoded). Other
 * requests wait in `backlog`: while the connection is down they wait for the next handshake (at
 * most `offlineTimeoutMs`, then `ConnectionLostError`); at the in-flight limit they wait for a
 * reply to free a slot.
 *
 * Connecting is on demand: the first request (or `connect()`) opens the socket and sends `hello`.
 * When the socket is lost, every pending request fails with `ConnectionLostError` (a write may or
 * may not have applied: SPEC §6.4), and if requests are waiting the connection reconnects after a
 * capped, doubling, jittered delay. A fatal handshake answer (`UNAUTHORIZED`,
 * `UNSUPPORTED_VERSION`) stops it for good. Only the first failure of a run of failed attempts
 * is logged, and one line when the connection is back.
 *
 * Invariants: a promise is in `pending` exactly while its request was written on the current
 * socket; losing the socket empties `pending`. After `close()`, every request has settled.
 */

import { EventEmitter } from 'node:events';
import net from 'node:net';
import tls from 'node:tls';

import { encodeRequest, FrameDecoder, Kind, toNumber, type Message } from './codec.js';
import {
  BrokerError, ConnectionClosedError, ConnectionLostError, FATAL_CODES, JobwireError,
} from './errors.js';
import { defaultLogger, type Logger } from './log.js';
import { DEFAULT_URL, parseUrl, reconnectDelay, type Endpoint } from './url.js';

const PROTOCOL_VERSION = 1;
/** Bytes queued in one turn after which the outbox is written at once. */
const FLUSH_BYTES = 256 * 1024;
/** Replies up to this size are accepted (the SPEC says a client SHOULD accept jobs above max_frame). */
const MAX_INBOUND_FRAME = 64 * 1024 * 1024;
const CLIENT_NAME = 'jobwire-node/0.1.0';

/** How to reach the broker, and how to behave when it is away. */
export interface ConnectionOptions {
  /** `jobwire://[token@]host:port` (default `jobwire://127.0.0.1:7400`). */
  url?: string;
  host?: string;
  port?: number;
  token?: string;
  /** The same as `token` (so BullMQ's `{ host, port, password }` works unchanged). */
  password?: string;
  /** A name for the broker's logs. */
  clientName?: string;
  /**
   * TLS (as `jobwires://` does), with Node's `tls.connect` options: `ca` for a private CA,
   * `cert`/`key` for a broker that requires client certificates. `true`: TLS with the system's
   * trusted CAs.
   */
  tls?: boolean | tls.ConnectionOptions;
  /** How long a request waits for a connection before it fails (ms, default 30,000). */
  offlineTimeoutMs?: number;
  /** How long TCP connect plus `hello` may take (ms, default 10,000). */
  connectTimeoutMs?: number;
  /** First reconnect delay (ms, default 100); doubles per failed attempt up to `reconnectMaxMs`. */
  reconnectBaseMs?: number;
  /** Longest reconnect delay (ms, default 5,000). */
  reconnectMaxMs?: number;
  logger?: Logger;
}

/** What `Queue`/`Worker` take as `connection`: a URL, options, or a `Connection` to share. */
export type ConnectionInput = string | ConnectionOptions | Connection;

/** What the broker said about itself in `hello`. */
export interface ServerInfo {
  version: number;
  server: string;
  now: number;
  maxFrame: number;
  maxPayload: number;
  maxBatch: number;
  maxInflight: number;
}

interface Waiting {
  op: string;
  args: Record<string, unknown>;
  resolve: (body: Record<string, unknown>) => void;
  reject: (error: Error) => void;
  since: number;
}

type Pending = Pick<Waiting, 'resolve' | 'reject'>;

type State = 'idle' | 'connecting' | 'ready' | 'closed';

/**
 * A pipelined connection; see the module comment. Events: `ready`, `lost`, `draining`, `error`,
 * `events` (the body of a subscription's `events` message, SPEC §10.1).
 */
export class Connection extends EventEmitter {
  readonly endpoint: Endpoint;
  /** The broker's `hello` answer on the current (or last) connection. */
  server: ServerInfo | null = null;
  /** Successful handshakes after the first one. */
  reconnects = 0;
  /** Requests written (every op, `hello` included). */
  requestsSent = 0;
  /** `socket.write` calls: fewer than `requestsSent` when frames were coalesced. */
  writes = 0;

  private readonly options: ConnectionOptions;
  private readonly logger: Logger;
  private state: State = 'idle';
  private socket: net.Socket | null = null;
  private readonly pending = new Map<number, Pending>();
  private backlog: Waiting[] = [];
  private outbox: Buffer[] = [];
  private outboxBytes = 0;
  private flushQueued = false;
  private nextId = 1;
  private failedAttempts = 0;
  private reconnectTimer: NodeJS.Timeout | null = null;
  private sweepTimer: NodeJS.Timeout | null = null;
  private fatal: Error | null = null;
  /** Why the last connection attempt failed (for the offline-timeout message). */
  private lastFailure = '';
  private readyWaiters: Array<{ resolve: () => void; reject: (e: Error) => void }> = [];
  private closePromise: Promise<void> | null = null;

  constructor(input: string | ConnectionOptions = {}) {
    super();
    this.options = typeof input === 'string' ? { url: input } : input;
    const parsed = parseUrl(this.options.url ?? DEFAULT_URL);
    this.endpoint = {
      host: this.options.host ?? parsed.host,
      port: this.options.port ?? parsed.port,
    };
    const token = this.options.token ?? this.options.password ?? parsed.token;
    if (token !== undefined) this.endpoint.token = token;
    if (this.options.tls ?? parsed.tls) this.endpoint.tls = true;
    this.logger = this.options.logger ?? defaultLogger;
    // Every Queue and Worker sharing this connection listens to it.
    this.setMaxListeners(0);
  }

  /**
   * A connection for `input`, and whether the caller owns it (and so closes it). `logger` (a
   * Queue's, Worker's or QueueEvents' own) goes to a connection made here from options.
   */
  static from(input: ConnectionInput | undefined, logger?: Logger): { connection: Connection; owned: boolean } {
    if (input instanceof Connection) return { connection: input, owned: false };
    const options = typeof input === 'string' ? input : { ...input, ...(logger ? { logger } : {}) };
    return { connection: new Connection(options), owned: true };
  }

  /** Whether a handshaken socket is up. */
  get connected(): boolean {
    return this.state === 'ready';
  }

  get closed(): boolean {
    return this.state === 'closed';
  }

  /** Connect now (if not yet) and resolve once the handshake succeeded. */
  connect(): Promise<void> {
    if (this.state === 'ready') return Promise.resolve();
    if (this.state === 'closed') return Promise.reject(this.closedError());
    return new Promise((resolve, reject) => {
      this.readyWaiters.push({ resolve, reject });
      if (this.state === 'idle' && this.reconnectTimer === null) this.open();
    });
  }

  /**
   * Send one request; resolves with the reply body, rejects with `BrokerError` (the broker's
   * error code), `ConnectionLostError` or `ConnectionClosedError`.
   */
  request<T = Record<string, unknown>>(op: string, args: Record<string, unknown> = {}): Promise<T> {
    if (this.state === 'closed') return Promise.reject(this.closedError());
    return new Promise<T>((resolve, reject) => {
      const item: Waiting = {
        op, args, resolve: resolve as (body: Record<string, unknown>) => void, reject,
        since: Date.now(),
      };
      if (this.state === 'ready' && this.backlog.length === 0 && this.hasSlot()) {
        this.send(item);
      } else {
        this.backlog.push(item);
        this.armSweep();
        if (this.state === 'idle' && this.reconnectTimer === null) this.open();
      }
    });
  }

  /** Close: fail what waits, let written frames leave, end the socket. Safe to call twice. */
  close(): Promise<void> {
    if (this.closePromise) return this.closePromise;
    this.state = 'closed';
    this.clearTimers();
    const error = new ConnectionClosedError('connection closed');
    this.failBacklog(error);
    for (const waiter of this.readyWaiters.splice(0)) waiter.reject(error);
    const socket = this.socket;
    this.closePromise = new Promise<void>((resolve) => {
      if (!socket || socket.destroyed) {
        this.failPending(error);
        resolve();
        return;
      }
      this.flush();
      socket.once('close', () => resolve());
      socket.end();
      // A broker that does not close its side within a second is not waited for.
      setTimeout(() => socket.destroy(), 1000).unref();
    });
    return this.closePromise;
  }

  private closedError(): Error {
    return this.fatal ?? new ConnectionClosedError('connection closed');
  }

  private hasSlot(): boolean {
    return this.pending.size < (this.server?.maxInflight ?? 1);
  }

  private send(item: Waiting): void {
    const id = this.nextId;
    this.nextId = this.nextId >= 0xffffffff ? 1 : this.nextId + 1;
    let frame: Buffer;
    try {
      frame = encodeRequest(id, item.op, item.args);
    } catch (error) {
      item.reject(error as Error);
      return;
    }
    this.pending.set(id, item);
    this.write(frame);
  }

  private write(frame: Buffer): void {
    this.requestsSent += 1;
    this.outbox.push(frame);
    this.outboxBytes += frame.length;
    if (this.outboxBytes >= FLUSH_BYTES) {
      this.flush();
    } else if (!this.flushQueued) {
      this.flushQueued = true;
      setImmediate(() => this.flush());
    }
  }

  private flush(): void {
    this.flushQueued = false;
    if (this.outbox.length === 0) return;
    const data = this.outbox.length === 1 ? this.outbox[0]! : Buffer.concat(this.outbox, this.outboxBytes);
    this.outbox = [];
    this.outboxBytes = 0;
    if (this.socket && !this.socket.destroyed) {
      this.writes += 1;
      this.socket.write(data);
    }
  }

  private open(): void {
    this.state = 'connecting';
    const { host, port } = this.endpoint;
    const tlsOptions = typeof this.options.tls === 'object' ? this.options.tls : {};
    const socket = this.endpoint.tls
      ? tls.connect({ servername: net.isIP(host) ? undefined : host, ...tlsOptions, host, port })
      : net.connect({ host, port });
    socket.setNoDelay(true);
    this.socket = socket;
    const connectEvent = this.endpoint.tls ? 'secureConnect' : 'connect';
    const decoder = new FrameDecoder(MAX_INBOUND_FRAME);
    let cause: Error | null = null;
    let handshaken = false;
    const timer = setTimeout(() => {
      cause = new ConnectionLostError(`no answer from ${host}:${port} within the connect timeout`);
      socket.destroy();
    }, this.options.connectTimeoutMs ?? 10_000);

    socket.on(connectEvent, () => {
      const hello: Record<string, unknown> = {
        version: PROTOCOL_VERSION, client: this.options.clientName ?? CLIENT_NAME,
      };
      if (this.endpoint.token !== undefined) hello.token = this.endpoint.token;
      this.pending.set(0, {
        resolve: (body) => {
          clearTimeout(timer);
          handshaken = true;
          this.onReady(body);
        },
        reject: (error) => {
          if (error instanceof BrokerError && FATAL_CODES.has(error.code)) this.fatal = error;
          cause = error;
          socket.destroy();
        },
      });
      this.write(encodeRequest(0, 'hello', hello));
    });
    socket.on('data', (chunk: Buffer) => {
      let messages: Message[];
      try {
        messages = decoder.feed(chunk);
      } catch (error) {
        cause = error as Error;
        socket.destroy();
        return;
      }
      for (const message of messages) {
        const event = this.onMessage(message);
        if (event) cause = event;
      }
    });
    socket.on('error', (error) => {
      cause ??= error;
    });
    socket.on('close', () => {
      clearTimeout(timer);
      if (this.socket === socket) this.socket = null;
      this.onLost(cause, handshaken);
    });
  }

  /** Handle one broker message; returns the error an `error` event announced, if any. */
  private onMessage(message: Message): Error | null {
    const kind = message[0];
    if (kind === Kind.REPLY || kind === Kind.ERROR) {
      const id = toNumber(message[1]);
      const waiter = this.pending.get(id);
      if (!waiter) return null;
      this.pending.delete(id);
      if (kind === Kind.REPLY) waiter.resolve(message[2] as Record<string, unknown>);
      else waiter.reject(new BrokerError(String(message[2]), String(message[3])));
      if (this.backlog.length > 0 && this.state === 'ready') this.drainBacklog();
      return null;
    }
    if (kind === Kind.EVENT) {
      const name = String(message[1]);
      const body = (message[2] ?? {}) as Record<string, unknown>;
      if (name === 'error') {
        const error = new BrokerError(String(body.code), String(body.message));
        if (FATAL_CODES.has(error.code)) this.fatal = error;
        return error;
      }
      if (name === 'draining') this.emit('draining');
      else if (name === 'events') this.emit('events', body);
    }
    return null;
  }

  private onReady(body: Record<string, unknown>): void {
    const first = this.server === null;
    this.server = {
      version: toNumber(body.version),
      server: String(body.server),
      now: toNumber(body.now),
      maxFrame: toNumber(body.max_frame),
      maxPayload: toNumber(body.max_payload),
      maxBatch: toNumber(body.max_batch),
      maxInflight: toNumber(body.max_inflight),
    };
    if (this.state === 'closed') return;
    this.state = 'ready';
    if (!first) this.reconnects += 1;
    if (this.failedAttempts > 0) {
      this.logger.warn(`connected to ${this.where()} again after ${this.failedAttempts} failed attempt(s)`);
    }
    this.failedAttempts = 0;
    for (const waiter of this.readyWaiters.splice(0)) waiter.resolve();
    this.drainBacklog();
    this.emit('ready', this.server);
  }

  private onLost(cause: Error | null, handshaken: boolean): void {
    const closing = this.state === 'closed';
    const reason = this.describe(cause);
    this.failPending(closing ? new ConnectionClosedError('connection closed')
      : new ConnectionLostError(`connection to ${this.where()} lost: ${reason}`, { cause }));
    if (closing) return;
    this.state = 'idle';
    if (handshaken) this.emit('lost', cause);
    if (this.fatal) {
      this.state = 'closed';
      this.clearTimers();
      this.failBacklog(this.fatal);
      for (const waiter of this.readyWaiters.splice(0)) waiter.reject(this.fatal);
      this.emitError(this.fatal);
      return;
    }
    if (!handshaken) {
      this.lastFailure = reason;
      if (this.failedAttempts === 0) this.logger.warn(`broker ${this.where()} unreachable (${reason}); retrying`);
      this.failedAttempts += 1;
    }
    if (this.backlog.length > 0 || this.readyWaiters.length > 0) this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    const delay = reconnectDelay(this.failedAttempts, this.options.reconnectBaseMs ?? 100,
      this.options.reconnectMaxMs ?? 5000);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      if (this.state === 'idle') this.open();
    }, delay);
  }

  private drainBacklog(): void {
    while (this.backlog.length > 0 && this.hasSlot()) this.send(this.backlog.shift()!);
  }

  private failPending(error: Error): void {
    const waiters = [...this.pending.values()];
    this.pending.clear();
    for (const waiter of waiters) waiter.reject(error);
  }

  private failBacklog(error: Error): void {
    for (const item of this.backlog.splice(0)) item.reject(error);
  }

  /** One timer fails backlog requests that waited longer than `offlineTimeoutMs`. */
  private armSweep(): void {
    if (this.sweepTimer) return;
    const limit = this.options.offlineTimeoutMs ?? 30_000;
    this.sweepTimer = setInterval(() => {
      if (this.backlog.length === 0) {
        clearInterval(this.sweepTimer!);
        this.sweepTimer = null;
        return;
      }
      if (this.state === 'ready') return;
      const cutoff = Date.now() - limit;
      const expired = this.backlog.filter((item) => item.since <= cutoff);
      if (expired.length === 0) return;
      this.backlog = this.backlog.filter((item) => item.since > cutoff);
      const error = new ConnectionLostError(`no broker at ${this.where()} for ${limit} ms: ` +
        `is \`jobwire serve\` running?${this.lastFailure ? ` (last attempt: ${this.lastFailure})` : ''}`);
      for (const item of expired) item.reject(error);
    }, Math.min(250, limit));
  }

  private clearTimers(): void {
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.reconnectTimer = null;
    this.sweepTimer = null;
  }

  private emitError(error: Error): void {
    if (this.listenerCount('error') > 0) this.emit('error', error);
    else this.logger.warn(error.message);
  }

  private where(): string {
    return `${this.endpoint.host}:${this.endpoint.port}`;
  }

  private describe(cause: Error | null): string {
    if (cause === null) return 'closed by the broker';
    if (cause instanceof JobwireError) return cause.message;
    const code = (cause as NodeJS.ErrnoException).code;
    return code === 'ECONNREFUSED' ? 'connection refused' : cause.message;
  }
}
