// Message search (GET /ui/api/messages): newest first, a page at a time.
//
// "Newest" is the queue id's order: ids sort by time (src/spool/spool.ts,
// newId: nine base-36 digits of the millisecond, then a counter and a
// random tag), so the messages table's primary key is its time order, and
// every kind of search is one index range read backwards from the cursor
// (the last id of the previous page), stopping at the page's end:
//
// - an address: the sender (dash_messages_sender: sender, id) and the
//   recipients (dash_events_recipient: the queued events by recipient,
//   queue id), exact, case-insensitive (both are stored lower-cased);
// - a Message-ID, with or without its angle brackets (messages_message_id);
// - a queue id (the primary key): that message alone, when it exists;
// - otherwise words of the subject, as a substring (LIKE '%…%'): a scan
//   down the primary key, bounded to SUBJECT_SCAN messages per page. A
//   page that reaches the bound before it is full ends there, and its
//   `next` carries the scan on. (FTS5 with the trigram tokenizer finds rare
//   words faster, but common ones slower, costs every message a write into
//   a second index, and would still need a sort: docs/dashboard.md has the
//   measurements.)
//
// Dates narrow each of these: `until` bounds the ids exactly (a message's
// id is taken before its first event, so its id time is at most its
// createdAt); `since` bounds them with ID_SLACK_MS to spare, and
// messages.created_at decides.

import type { DashboardStore, MessageRow, ScanResult, SearchWindow } from '../store/dashboard.ts';
import { ID_TOP } from '../store/dashboard.ts';

/** Messages a subject search examines per page at most: about 100 ms of SQLite work (bench/dashboard.ts). */
export const SUBJECT_SCAN = 500_000;
/** The most an id's time can precede its message's first event (a slow DATA transfer, a queued API send). */
export const ID_SLACK_MS = 24 * 60 * 60_000;
export const DEFAULT_PAGE = 50;
export const MAX_PAGE = 200;

/** The 9-character time prefix of queue ids made at `ms` (as Spool#newId writes it). */
export function idTimePrefix(ms: number): string {
  return Math.max(0, Math.floor(ms)).toString(36).toUpperCase().padStart(9, '0');
}

export interface SearchQuery {
  q?: string | undefined;
  /** Epoch ms, inclusive. */
  since?: number | undefined;
  until?: number | undefined;
  limit: number;
  /** The `next` of the previous page: ids below it. */
  before?: string | undefined;
}

export type RecipientStatus = 'queued' | 'deferred' | 'delivered' | 'bounced' | 'expired' | 'suppressed';

export interface FoundMessage {
  id: string;
  from: string;
  subject: string | null;
  messageId: string | null;
  createdAt: string;
  recipients: { address: string; status: RecipientStatus }[];
}

export interface SearchPage {
  messages: FoundMessage[];
  next: string | null;
}

const ADDRESS = /^[^\s<>@]+@[^\s<>@]+$/;
const BRACKETED_ID = /^<([^\s<>]+)>$/;
const QUEUE_ID = /^[0-9A-Za-z]{16}$/;

/** Events that set a recipient's status (as /v1/messages/{id} has it, src/api/messages.ts). */
const STATUS_OF: Readonly<Record<string, RecipientStatus>> = {
  queued: 'queued',
  deferred: 'deferred',
  delivered: 'delivered',
  bounced: 'bounced',
  expired: 'expired',
  suppressed: 'suppressed',
};

/** A LIKE pattern matching `text` anywhere, its own % _ \ taken literally. */
export function containsPattern(text: string): string {
  return `%${text.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
}

/** One kind of match, asked for `limit` ids: all of its hits at or above `floor` are in `ids` ('' when it found all). */
type Kind = (w: SearchWindow, limit: number) => ScanResult;

/** Turns an exact lookup (which returns its newest `limit`) into a Kind. */
function exact(find: (w: SearchWindow, limit: number) => string[]): Kind {
  return (w, limit) => {
    const ids = find(w, limit);
    return { ids, floor: ids.length >= limit ? ids.at(-1)! : '' };
  };
}

/** What `q` can mean, each a Kind (see the file's head). */
function kindsOf(store: DashboardStore, q: string): Kind[] {
  if (q === '') return [exact((w, n) => store.idsByTime(w, n))];
  const bracketed = BRACKETED_ID.exec(q);
  if (bracketed) return [exact((w, n) => store.idsByMessageId([q, bracketed[1]!], w, n))];
  if (ADDRESS.test(q)) {
    const lower = q.toLowerCase();
    return [
      exact((w, n) => store.idsBySender(lower, w, n)),
      exact((w, n) => store.idsByRecipient(lower, w, n)),
      exact((w, n) => store.idsByMessageId([`<${q}>`, q], w, n)),
    ];
  }
  const subject: Kind = (w, n) => store.idsBySubject(containsPattern(q), w, n, SUBJECT_SCAN);
  if (QUEUE_ID.test(q)) {
    // A queue id names one message: when it exists, that is the answer, and the subject scan is spared.
    const [m] = store.messages([q.toUpperCase()]);
    if (m) return [(w) => ({ ids: m.id < w.below && m.id >= w.from && m.createdAt >= w.since && m.createdAt <= w.until ? [m.id] : [], floor: '' })];
  }
  return [subject];
}

/**
 * One page. Each kind returns its newest `limit` hits below the cursor and
 * how far down they are complete; the page is the newest `limit` of their
 * union above the highest of those floors (below it, some kind may have
 * hits it did not return), and `next` continues below the page's last id,
 * or below the floor when the union above it was not enough to fill it.
 */
export function searchMessages(store: DashboardStore, query: SearchQuery): SearchPage {
  const q = (query.q ?? '').trim();
  const since = query.since ?? 0;
  const until = query.until ?? Number.MAX_SAFE_INTEGER;
  let below = query.before ?? ID_TOP;
  if (query.until !== undefined) {
    const cap = idTimePrefix(query.until + 1);
    if (cap < below) below = cap;
  }
  const w: SearchWindow = { below, from: query.since !== undefined ? idTimePrefix(query.since - ID_SLACK_MS) : '', since, until };
  const limit = query.limit;
  const results = kindsOf(store, q).map((kind) => kind(w, limit));
  const floor = results.reduce((f, r) => (r.floor > f ? r.floor : f), '');
  const union = [...new Set(results.flatMap((r) => r.ids))].filter((id) => id >= floor).sort().reverse();
  const page = union.slice(0, limit);
  const next = union.length > limit ? page.at(-1)! : floor !== '' ? floor : null;
  return { messages: describe(store, page), next };
}

/** The page's messages, in its order, each with its recipients' current status. */
function describe(store: DashboardStore, ids: string[]): FoundMessage[] {
  const rows = new Map<string, MessageRow>(store.messages(ids).map((m) => [m.id, m]));
  const recipients = new Map<string, Map<string, RecipientStatus>>();
  for (const e of store.recipientEvents(ids)) {
    let of = recipients.get(e.queueId);
    if (!of) recipients.set(e.queueId, (of = new Map()));
    const status = STATUS_OF[e.type];
    if (status) of.set(e.recipient, status);
    else if (!of.has(e.recipient)) of.set(e.recipient, 'queued');
  }
  const out: FoundMessage[] = [];
  for (const id of ids) {
    const m = rows.get(id);
    if (!m) continue;
    out.push({
      id,
      from: m.sender,
      subject: m.subject,
      messageId: m.messageId,
      createdAt: new Date(m.createdAt).toISOString(),
      recipients: [...(recipients.get(id) ?? new Map<string, RecipientStatus>())].map(([address, status]) => ({ address, status })),
    });
  }
  return out;
}
