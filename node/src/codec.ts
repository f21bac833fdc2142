/**
 * The wire codec: 4-byte big-endian length + one msgpack array (protocol/SPEC.md §2–§4), and the
 * rule that keeps integers integers.
 *
 * Theory of operation: msgpackr writes a JavaScript `number` that is an integer outside the
 * 32-bit range as a float64, and the broker refuses a float where it wants an int (times, lease
 * tokens, long delays). So every integer field this client sends goes through `wireInt`, which
 * turns values above 2^32 - 1 into a `bigint` (msgpackr writes those as int64/uint64). Lease
 * tokens are uint64 and are kept as `bigint` from the reply to the ack. Replies are decoded with
 * every 64-bit integer as a `bigint`; `toNumber` brings times back to `number` (they are below
 * 2^53 by the SPEC).
 */

import { Packr, Unpackr } from 'msgpackr';

export const Kind = { REQUEST: 0, REPLY: 1, ERROR: 2, EVENT: 3 } as const;

/** Packs request frames. Undefined becomes nil (an ext type would be BAD_FRAME). */
const wirePackr = new Packr({ useRecords: false, encodeUndefinedAsNil: true, variableMapSize: true });
/** Unpacks broker frames: maps as objects, every 64-bit int as a bigint. */
const wireUnpackr = new Unpackr({ useRecords: false, mapsAsObjects: true, int64AsType: 'bigint' });

const UINT32_MAX = 0xffffffff;

/**
 * An integer for the wire: a `number` up to 2^32 - 1 stays a number (msgpackr writes it as an
 * int), anything larger becomes a `bigint` (written as an int64/uint64, never as a float).
 *
 * @throws TypeError when `value` is not an integer.
 */
export function wireInt(value: number | bigint, field: string): number | bigint {
  if (typeof value === 'bigint') return value;
  if (!Number.isInteger(value)) throw new TypeError(`${field}: expected an integer, got ${value}`);
  return value > UINT32_MAX || value < -0x80000000 ? BigInt(value) : value;
}

/** A broker int (possibly decoded as a bigint) as a number; `null` stays `null`. */
export function toNumber(value: unknown): number {
  return typeof value === 'bigint' ? Number(value) : (value as number);
}

/** Encode one request frame: prefix and body in one buffer. */
export function encodeRequest(requestId: number, op: string, args: Record<string, unknown>): Buffer {
  const body = wirePackr.pack([Kind.REQUEST, requestId, op, args]);
  const frame = Buffer.allocUnsafe(4 + body.length);
  frame.writeUInt32BE(body.length, 0);
  body.copy(frame, 4);
  return frame;
}

/** The bytes of a whole msgpack value packed like a wire frame body (used to size progress). */
export function packWireValue(value: unknown): Buffer {
  return wirePackr.pack(value);
}

/** A frame the broker sent, decoded: `[kind, ...]`. */
export type Message = unknown[];

/**
 * Incremental frame decoder: `feed(chunk)` returns the messages completed by it. Any split of
 * the byte stream decodes the same. Chunks are kept as they arrived and joined once per frame,
 * so a large frame arriving in many reads is copied once, not once per read.
 */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;
  /** Body length of the frame being read, or -1 before its prefix is complete. */
  private need = -1;

  constructor(private readonly maxFrame: number) {}

  feed(chunk: Buffer): Message[] {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    const out: Message[] = [];
    for (;;) {
      if (this.need < 0) {
        if (this.buffered < 4) break;
        const head = this.take(4);
        this.need = head.readUInt32BE(0);
        if (this.need === 0 || this.need > this.maxFrame) {
          throw new FrameError(`broker sent a frame of ${this.need} bytes (max ${this.maxFrame})`);
        }
      }
      if (this.buffered < this.need) break;
      const body = this.take(this.need);
      this.need = -1;
      const message = wireUnpackr.unpack(body) as unknown;
      if (!Array.isArray(message)) throw new FrameError('broker sent a frame that is not an array');
      out.push(message);
    }
    return out;
  }

  /** Remove and return the next `n` buffered bytes (a view when they sit in one chunk). */
  private take(n: number): Buffer {
    const first = this.chunks[0]!;
    let out: Buffer;
    if (first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
    } else {
      out = Buffer.allocUnsafe(n);
      let filled = 0;
      while (filled < n) {
        const chunk = this.chunks[0]!;
        const part = Math.min(chunk.length, n - filled);
        chunk.copy(out, filled, 0, part);
        filled += part;
        if (part === chunk.length) this.chunks.shift();
        else this.chunks[0] = chunk.subarray(part);
      }
    }
    this.buffered -= n;
    return out;
  }
}

/** The broker's byte stream could not be decoded; the connection is dropped. */
export class FrameError extends Error {
  override name = 'FrameError';
}
