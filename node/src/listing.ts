/**
 * `Queue.getJobs` over `list_jobs` (SPEC §8.19): BullMQ's `(types, start, end, asc)` on top of
 * the broker's pages.
 *
 * The broker lists each state in one fixed order: waiting in run order, delayed by run time,
 * active by lease deadline (all "ascending"), completed and failed newest first ("descending").
 * The result is the states' lists one after the other, in the order the types were named, each
 * in the asked direction, and positions `start..end` (inclusive; `end < 0`: to the last) of that
 * sequence. When every state's order is the asked one, that is one paged `list_jobs` of all
 * of them; otherwise each state's total comes first (one pipelined request per state), and a
 * reversed state's slice is read from the mirrored positions and turned around.
 *
 * A page is a snapshot: jobs that move between two requests can make a long listing repeat or
 * skip one (as the broker says of its pages).
 *
 * Also BullMQ's job types (`JobType`) and how they map to the broker's states and counters.
 */

import { toNumber } from './codec.js';
import type { Connection } from './connection.js';

/** The states `list_jobs` knows. */
export type BrokerState = 'waiting' | 'delayed' | 'active' | 'completed' | 'failed';

type Info = Record<string, unknown>;

/** The most jobs one `list_jobs` answers. */
const PAGE = 1000;

const ASCENDING: ReadonlySet<BrokerState> = new Set(['waiting', 'delayed', 'active']);

/** JobInfo maps of `states` of `queue`, positions `start..end` in the direction `asc`. */
export async function listJobs(
  connection: Connection, queue: string, states: BrokerState[], start: number, end: number, asc: boolean,
): Promise<Info[]> {
  const first = Math.max(0, Math.floor(start));
  const last = end < 0 ? Infinity : Math.floor(end);
  if (states.length === 0 || last < first) return [];
  if (states.every((state) => ASCENDING.has(state) === asc)) {
    return readRange(connection, queue, states, first, last);
  }
  const totals = await Promise.all(states.map(async (state) => toNumber((await list(
    connection, queue, [state], 0, 1)).total)));
  const parts: Promise<Info[]>[] = [];
  let base = 0;
  states.forEach((state, index) => {
    const total = totals[index]!;
    const a = Math.max(first, base) - base;
    const b = Math.min(last, base + total - 1) - base;
    base += total;
    if (b < a) return;
    if (ASCENDING.has(state) === asc) {
      parts.push(readRange(connection, queue, [state], a, b));
    } else {
      parts.push(readRange(connection, queue, [state], total - 1 - b, total - 1 - a).then((jobs) => jobs.reverse()));
    }
  });
  return (await Promise.all(parts)).flat();
}

/** Positions `first..last` of the broker's sequence for `states`, page by page. */
async function readRange(connection: Connection, queue: string, states: BrokerState[], first: number, last: number): Promise<Info[]> {
  const out: Info[] = [];
  let offset = first;
  while (offset <= last) {
    const limit = Number.isFinite(last) ? Math.min(PAGE, last - offset + 1) : PAGE;
    const body = await list(connection, queue, states, offset, limit);
    out.push(...body.jobs);
    offset += body.jobs.length;
    if (body.jobs.length === 0 || offset >= toNumber(body.total)) break;
  }
  return out;
}

function list(connection: Connection, queue: string, states: BrokerState[], offset: number, limit: number): Promise<{ jobs: Info[]; total: unknown }> {
  return connection.request<{ jobs: Info[]; total: unknown }>('list_jobs', { queue, states, offset, limit });
}

/** BullMQ's job-count type names; `wait`/`waiting` are the same. */
export type JobType =
  | 'waiting' | 'wait' | 'active' | 'completed' | 'failed' | 'delayed' | 'paused' | 'prioritized'
  | 'waiting-children';

export const ALL_TYPES: JobType[] = [
  'active', 'completed', 'delayed', 'failed', 'paused', 'prioritized', 'waiting', 'waiting-children',
];

/** Per-queue counters from `stats` (SPEC §9.7). */
export interface QueueStats {
  waiting: number;
  delayed: number;
  active: number;
  completed: number;
  failed: number;
  paused: boolean;
  oldestWaitingMs: number | null;
  totalCompleted: number;
  totalFailed: number;
}

export function stateOf(type: JobType, paused: boolean): BrokerState | null {
  switch (type) {
    case 'waiting':
    case 'wait':
      return paused ? null : 'waiting';
    case 'paused':
      return paused ? 'waiting' : null;
    case 'active':
    case 'completed':
    case 'failed':
    case 'delayed':
      return type;
    default:
      return null;
  }
}

export function countOf(stats: QueueStats, type: JobType): number {
  switch (type) {
    case 'waiting':
    case 'wait':
      return stats.paused ? 0 : stats.waiting;
    case 'paused':
      return stats.paused ? stats.waiting : 0;
    case 'active':
    case 'completed':
    case 'failed':
    case 'delayed':
      return stats[type];
    default:
      return 0;
  }
}
