// The queue as the dashboard shows it: a bounded page of `tern queue list
// --json` (the scheduler's QueueSummary), the counts for the overview, and
// a queued message's header section.

import { setImmediate as nextTurn } from 'node:timers/promises';
import type { Readable } from 'node:stream';
import type { QueueSummary } from '../queue/scheduler.ts';

export type QueueState = QueueSummary['state'];

/** What the dashboard asks of the scheduler (src/queue/scheduler.ts). */
export interface QueueView {
  listing(): Iterable<QueueSummary>;
  /** O(1): all, waiting for a later attempt, held. */
  readonly counts: { total: number; waiting: number; held: number };
  /** O(1): delivery jobs running now. */
  readonly inFlight: number;
}

export interface QueueCounts {
  total: number;
  /** Due, not being delivered yet: waiting for a delivery slot (outbound.concurrency, perDestination), or for a route. */
  queued: number;
  /** Being delivered now. */
  active: number;
  /** Waiting for their next attempt. */
  deferred: number;
  held: number;
}

/**
 * The overview's queue figures, in O(1) (the scheduler keeps these
 * numbers; nothing walks the queue, so the live stream can ask every
 * second). active counts delivery jobs running, capped by the messages
 * that can be running: a message sent to two domains at once is two jobs.
 */
export function queueCounts(q: QueueView): QueueCounts {
  const { total, waiting, held } = q.counts;
  const due = Math.max(0, total - waiting - held);
  const active = Math.min(q.inFlight, due);
  return { total, queued: due - active, active, deferred: waiting, held };
}

/** Summaries taken per turn of the event loop: a long walk never holds up the sessions for long. */
const SLICE = 1000;

/**
 * Up to `limit` messages in the queue's order (oldest first) that match
 * the filters. The walk stops as soon as the page (and one more, for
 * `more`) is found; only a filter that matches little walks far, a slice
 * per turn of the event loop, like `tern queue list` over the control
 * socket.
 */
export async function queuePage(q: QueueView, filter: { state?: QueueState | undefined; domain?: string | undefined }, limit: number): Promise<{ messages: QueueSummary[]; total: number; more: boolean }> {
  const domain = filter.domain?.toLowerCase().replace(/^@/, '');
  const suffix = domain === undefined ? '' : `@${domain}`;
  const messages: QueueSummary[] = [];
  let more = false;
  let scanned = 0;
  for (const m of q.listing()) {
    if (++scanned % SLICE === 0) await nextTurn();
    if (filter.state !== undefined && m.state !== filter.state) continue;
    if (domain !== undefined && !m.recipients.some((r) => r.address.toLowerCase().endsWith(suffix))) continue;
    if (messages.length === limit) {
      more = true;
      break;
    }
    messages.push(m);
  }
  return { messages, total: q.counts.total, more };
}

/** The most of a header section the message page shows. */
export const HEADERS_MAX = 64 * 1024;

/**
 * The header section (RFC 5322 §2.1: up to the first empty line) of a
 * stored message, as text: read from the start of `stream` up to the empty
 * line or `max` bytes, whichever comes first; the rest is never read.
 * Bytes that are not UTF-8 show as U+FFFD.
 */
export async function readHeaderSection(stream: Readable, max = HEADERS_MAX): Promise<string> {
  const parts: Buffer[] = [];
  let length = 0;
  try {
    for await (const chunk of stream) {
      const b = chunk as Buffer;
      parts.push(b);
      length += b.length;
      const head = Buffer.concat(parts, length);
      const end = headerEnd(head);
      if (end >= 0) return head.subarray(0, Math.min(end, max)).toString('utf8');
      if (length >= max) return head.subarray(0, max).toString('utf8');
    }
    return Buffer.concat(parts, length).toString('utf8');
  } finally {
    stream.destroy();
  }
}

/** Where the header section ends (before its empty line; bare LF tolerated for display), or -1. */
function headerEnd(b: Buffer): number {
  if (b.subarray(0, 2).toString('latin1') === '\r\n') return 0;
  if (b[0] === 0x0a) return 0;
  const crlf = b.indexOf('\r\n\r\n');
  const lf = b.indexOf('\n\n');
  if (crlf >= 0 && (lf < 0 || crlf < lf)) return crlf + 2;
  return lf >= 0 ? lf + 1 : -1;
}
