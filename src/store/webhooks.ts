// Webhooks, their durable outbox and their recent deliveries
// (src/webhooks/ owns the meaning; docs/webhooks.md). Three tables:
//
// - webhooks: what a key registered. `owner` is the key's hash, as for
//   Idempotency-Key entries: a key revoked and re-created under the same
//   name is another key, and does not inherit the old one's webhooks.
// - webhook_outbox: one row per (webhook, event) still to be delivered.
//   Rows are written in the events' own transaction (EventRecorder.alsoWrite),
//   so an event is stored and announced, or neither. A row written that way
//   has no body: the payload is made again from the event's own row
//   (events.body) when the row is claimed, so each event's JSON is written
//   once, not once more per webhook (schema step 16; the bytes were a fifth
//   of a webhook's CPU cost per message, docs/webhooks.md "Cost"). The
//   dispatcher that wrote the row POSTs it from memory and never reads it. `claimed_until` is a lease: a dispatcher owns
//   a row until then. One node claims with UPDATE today; several sharing
//   PostgreSQL would SELECT … FOR UPDATE SKIP LOCKED on the same condition.
// - webhook_deliveries: the last attempts per webhook, for GET /v1/webhooks
//   and the dashboard; pruned as they are written.
//
// Every statement the dispatcher runs per tick walks an index to what it
// needs: nothing here reads the whole outbox.

import type { DatabaseSync, StatementSync } from 'node:sqlite';
import type { EventType } from '../events/events.ts';

/** Schema step 6 of store.ts's MIGRATIONS. */
export const WEBHOOK_SCHEMA = `CREATE TABLE webhooks (
     id TEXT PRIMARY KEY NOT NULL,
     owner TEXT NOT NULL,
     url TEXT NOT NULL,
     events TEXT,
     secret TEXT NOT NULL,
     created_at INTEGER NOT NULL,
     disabled_at INTEGER,
     disabled_reason TEXT
   ) STRICT;
   CREATE INDEX webhooks_owner ON webhooks (owner);
   CREATE TABLE webhook_outbox (
     seq INTEGER PRIMARY KEY,
     webhook_id TEXT NOT NULL,
     event_id TEXT NOT NULL,
     event_at INTEGER NOT NULL,
     body TEXT NOT NULL,
     attempts INTEGER NOT NULL DEFAULT 0,
     next_attempt INTEGER NOT NULL,
     claimed_until INTEGER
   ) STRICT;
   CREATE INDEX webhook_outbox_due ON webhook_outbox (webhook_id, next_attempt);
   CREATE INDEX webhook_outbox_claimed ON webhook_outbox (claimed_until) WHERE claimed_until IS NOT NULL;
   CREATE TABLE webhook_deliveries (
     id INTEGER PRIMARY KEY,
     webhook_id TEXT NOT NULL,
     event_id TEXT NOT NULL,
     attempt INTEGER NOT NULL,
     at INTEGER NOT NULL,
     status INTEGER,
     error TEXT,
     duration_ms INTEGER NOT NULL,
     outcome TEXT NOT NULL
   ) STRICT;
   CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries (webhook_id, id)`;

export interface WebhookRecord {
  /** `wh_` and 24 hex digits. */
  id: string;
  /** The owning API key's hash (ApiKeyRecord.hash). */
  owner: string;
  url: string;
  /** The event types it gets; null: every type, including types added later. */
  events: EventType[] | null;
  /** `whsec_…`: kept in the clear, because every POST is signed with it (the database file is owner-only). */
  secret: string;
  /** Epoch ms. */
  createdAt: number;
  /** Epoch ms; null while enabled. */
  disabledAt: number | null;
  disabledReason: string | null;
}

/** A webhook as listed: with its owner key's name, null when that key was revoked. */
export interface WebhookListing extends WebhookRecord {
  ownerName: string | null;
}

/** An enabled webhook whose owner key exists, with what fan-out needs of that key. */
export interface ActiveWebhookRecord extends WebhookRecord {
  ownerName: string;
  ownerSendAs: string[];
  ownerAdmin: boolean;
}

/** One row to add to the outbox. */
export interface OutboxInsert {
  webhookId: string;
  eventId: string;
  /** Epoch ms of the event: retries end `webhooks.retryFor` after it. */
  eventAt: number;
  /** The payload to store; absent: none is stored, and claim returns the event's stored JSON instead (ClaimedRow.event). */
  body?: string | undefined;
  /** Epoch ms; the fan-out writes "now". */
  nextAttempt: number;
}

export interface OutboxRow {
  seq: number;
  webhookId: string;
  eventId: string;
  eventAt: number;
  body: string;
  /** Attempts made so far. */
  attempts: number;
  nextAttempt: number;
}

/**
 * A row as claim returns it: `body` as stored, or null when none was, and
 * then `event`, the event's JSON from the events table (null when the event
 * is no longer stored: events.retention is shorter than its retries).
 */
export interface ClaimedRow extends Omit<OutboxRow, 'body'> {
  body: string | null;
  event: string | null;
}

/** How an attempt ended for its row. */
export type DeliveryOutcome = 'delivered' | 'retrying' | 'failed' | 'disabled';

export interface DeliveryRecord {
  webhookId: string;
  eventId: string;
  /** 1 for the first POST of the event. */
  attempt: number;
  /** Epoch ms when the attempt started. */
  at: number;
  /** The HTTP status; null when there was none (connection refused, timeout). */
  status: number | null;
  error: string | null;
  durationMs: number;
  outcome: DeliveryOutcome;
}

export interface WebhookStore {
  /** Runs `fn` in one transaction, joining the caller's if one is open. */
  transaction<T>(fn: () => T): T;

  addWebhook(w: WebhookRecord): void;
  /** How many webhooks the key with hash `owner` has. */
  countWebhooks(owner: string): number;
  /** One webhook, whoever owns it. */
  getWebhook(id: string): WebhookListing | null;
  /** The webhooks of the key with hash `owner`, or of every key (null), oldest first. */
  listWebhooks(owner: string | null): WebhookListing[];
  /** Deletes the webhook and its recorded deliveries (its outbox rows go with purgeOutbox). */
  deleteWebhook(id: string): boolean;
  /** False when it is gone or was already disabled. */
  disableWebhook(id: string, at: number, reason: string): boolean;
  /** Enabled webhooks whose owner key exists. */
  activeWebhooks(): ActiveWebhookRecord[];

  /** Adds rows (in the caller's transaction: the events'). */
  enqueue(rows: OutboxInsert[]): void;
  /**
   * Adds rows already leased to the caller until `claimedUntil`, and returns
   * their seqs in the order given: the dispatcher of the node that wrote an
   * event POSTs it from memory, with no claim (a write and a read of every
   * row) in between. Optional: a store that learns the seqs only with a
   * round trip (PostgreSQL, whose insert is deferred to the commit) leaves
   * it out, and its rows are claimed as usual.
   */
  enqueueClaimed?(rows: OutboxInsert[], claimedUntil: number): number[];
  /**
   * Claims up to `max` rows of one webhook that are due at `now` and not
   * leased, earliest first, leasing them until `leaseUntil`.
   */
  claim(webhookId: string, now: number, leaseUntil: number, max: number): ClaimedRow[];
  /** The earliest next attempt among the webhook's unclaimed rows; null when it has none. */
  nextDue(webhookId: string): number | null;
  /** Delivered or given up: the row goes. */
  finish(seq: number): void;
  /** finish for many rows at once (one statement). */
  finishMany(seqs: readonly number[]): void;
  /** Failed: the next attempt at `nextAttempt`, the lease ended. */
  reschedule(seq: number, attempts: number, nextAttempt: number): void;
  /** Ends leases without an attempt. */
  release(seqs: number[]): void;
  /** Ends every lease (at start: only one server runs per data directory, so every lease is a dead process's); returns how many. */
  releaseAllClaims(): number;
  /** Deletes up to `max` rows of a webhook; returns how many went. */
  purgeOutbox(webhookId: string, max: number): number;
  /**
   * Deletes up to `max` rows, oldest first, of events older than `before`
   * (epoch ms); returns how many went. Rows are numbered as they are
   * written, in event order, so this walks from the oldest and stops at
   * the first `max` rows, however large the outbox.
   */
  expireOutbox(before: number, max: number): number;
  /** At most `limit` rows counted: the dashboard's "pending", cheap whatever the backlog. */
  countPending(webhookId: string, limit: number): number;

  recordDelivery(d: DeliveryRecord): void;
  /** Keeps only the newest `keep` recorded deliveries of the webhook. */
  pruneDeliveries(webhookId: string, keep: number): void;
  /** Newest first. */
  recentDeliveries(webhookId: string, limit: number): DeliveryRecord[];
  close(): void;
}

/** Rows as both stores read them (src/store/pg/webhooks.ts reads the same columns). */
export interface WebhookRow {
  id: string;
  owner: string;
  url: string;
  events: string | null;
  secret: string;
  created_at: number;
  disabled_at: number | null;
  disabled_reason: string | null;
  owner_name: string | null;
}

export interface OutboxDbRow {
  seq: number;
  webhook_id: string;
  event_id: string;
  event_at: number;
  body: string | null;
  attempts: number;
  next_attempt: number;
  /** The event's JSON, when body is null (claim joins it). */
  event?: string | null;
}

export interface DeliveryRow {
  webhook_id: string;
  event_id: string;
  attempt: number;
  at: number;
  status: number | null;
  error: string | null;
  duration_ms: number;
  outcome: string;
}

export const LISTING = 'SELECT w.*, k.name AS owner_name FROM webhooks w LEFT JOIN api_keys k ON k.hash = w.owner';

export class SqliteWebhookStore implements WebhookStore {
  readonly #db: DatabaseSync;
  readonly #tx: <T>(fn: () => T) => T;
  readonly #insert: StatementSync;
  readonly #claim: StatementSync;
  readonly #nextDue: StatementSync;
  readonly #finish: StatementSync;
  readonly #finishMany: StatementSync;
  readonly #reschedule: StatementSync;
  readonly #release: StatementSync;
  readonly #record: StatementSync;
  readonly #prune: StatementSync;
  readonly #eventBody: StatementSync;

  constructor(db: DatabaseSync, transaction: <T>(fn: () => T) => T) {
    this.#db = db;
    this.#tx = transaction;
    this.#insert = db.prepare('INSERT INTO webhook_outbox (webhook_id, event_id, event_at, body, next_attempt, claimed_until) VALUES (?, ?, ?, ?, ?, ?)');
    // A lease that ran out belongs to a dispatcher that died (or, with
    // several nodes, stalled): the row is due again.
    this.#claim = db.prepare(
      `UPDATE webhook_outbox SET claimed_until = ?
       WHERE seq IN (SELECT seq FROM webhook_outbox
                     WHERE webhook_id = ? AND next_attempt <= ? AND (claimed_until IS NULL OR claimed_until < ?)
                     ORDER BY next_attempt LIMIT ?)
       RETURNING seq, webhook_id, event_id, event_at, body, attempts, next_attempt`,
    );
    // Leased rows are the earliest (they were claimed in due order) and few (at most a dispatcher's prefetch): the walk skips them quickly.
    this.#nextDue = db.prepare('SELECT next_attempt FROM webhook_outbox WHERE webhook_id = ? AND claimed_until IS NULL ORDER BY next_attempt LIMIT 1');
    this.#finish = db.prepare('DELETE FROM webhook_outbox WHERE seq = ?');
    this.#finishMany = db.prepare('DELETE FROM webhook_outbox WHERE seq IN (SELECT value FROM json_each(?))');
    this.#reschedule = db.prepare('UPDATE webhook_outbox SET attempts = ?, next_attempt = ?, claimed_until = NULL WHERE seq = ?');
    this.#release = db.prepare('UPDATE webhook_outbox SET claimed_until = NULL WHERE seq = ?');
    // Only for a webhook that still exists: an attempt that ends after a DELETE leaves nothing behind.
    this.#record = db.prepare(
      `INSERT INTO webhook_deliveries (webhook_id, event_id, attempt, at, status, error, duration_ms, outcome)
       SELECT ?, ?, ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM webhooks WHERE id = ?)`,
    );
    this.#eventBody = db.prepare('SELECT body FROM events WHERE id = ?');
    this.#prune = db.prepare(
      `DELETE FROM webhook_deliveries WHERE webhook_id = ? AND id <=
         (SELECT id FROM webhook_deliveries WHERE webhook_id = ? ORDER BY id DESC LIMIT 1 OFFSET ?)`,
    );
  }

  transaction<T>(fn: () => T): T {
    return this.#tx(fn);
  }

  addWebhook(w: WebhookRecord): void {
    this.#db
      .prepare('INSERT INTO webhooks (id, owner, url, events, secret, created_at, disabled_at, disabled_reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?)')
      .run(w.id, w.owner, w.url, w.events === null ? null : JSON.stringify(w.events), w.secret, w.createdAt, w.disabledAt, w.disabledReason);
  }

  countWebhooks(owner: string): number {
    return (this.#db.prepare('SELECT COUNT(*) AS n FROM webhooks WHERE owner = ?').get(owner) as { n: number }).n;
  }

  getWebhook(id: string): WebhookListing | null {
    const row = this.#db.prepare(`${LISTING} WHERE w.id = ?`).get(id) as WebhookRow | undefined;
    return row ? listingOf(row) : null;
  }

  listWebhooks(owner: string | null): WebhookListing[] {
    const rows = (owner === null
      ? this.#db.prepare(`${LISTING} ORDER BY w.created_at, w.id`).all()
      : this.#db.prepare(`${LISTING} WHERE w.owner = ? ORDER BY w.created_at, w.id`).all(owner)) as unknown as WebhookRow[];
    return rows.map(listingOf);
  }

  deleteWebhook(id: string): boolean {
    return this.#tx(() => {
      this.#db.prepare('DELETE FROM webhook_deliveries WHERE webhook_id = ?').run(id);
      return Number(this.#db.prepare('DELETE FROM webhooks WHERE id = ?').run(id).changes) > 0;
    });
  }

  disableWebhook(id: string, at: number, reason: string): boolean {
    const r = this.#db.prepare('UPDATE webhooks SET disabled_at = ?, disabled_reason = ? WHERE id = ? AND disabled_at IS NULL').run(at, reason, id);
    return Number(r.changes) > 0;
  }

  activeWebhooks(): ActiveWebhookRecord[] {
    const rows = this.#db
      .prepare(
        `SELECT w.*, k.name AS owner_name, k.send_as AS owner_send_as, k.admin AS owner_admin
         FROM webhooks w JOIN api_keys k ON k.hash = w.owner WHERE w.disabled_at IS NULL ORDER BY w.created_at, w.id`,
      )
      .all() as unknown as (WebhookRow & { owner_name: string; owner_send_as: string; owner_admin: number })[];
    return rows.map((r) => ({ ...listingOf(r), ownerName: r.owner_name, ownerSendAs: JSON.parse(r.owner_send_as) as string[], ownerAdmin: r.owner_admin === 1 }));
  }

  enqueue(rows: OutboxInsert[]): void {
    this.#tx(() => {
      for (const r of rows) this.#insert.run(r.webhookId, r.eventId, r.eventAt, r.body ?? null, r.nextAttempt, null);
    });
  }

  enqueueClaimed(rows: OutboxInsert[], claimedUntil: number): number[] {
    return this.#tx(() => rows.map((r) => Number(this.#insert.run(r.webhookId, r.eventId, r.eventAt, r.body ?? null, r.nextAttempt, claimedUntil).lastInsertRowid)));
  }

  claim(webhookId: string, now: number, leaseUntil: number, max: number): ClaimedRow[] {
    const rows = this.#claim.all(leaseUntil, webhookId, now, now, max) as unknown as OutboxDbRow[];
    // UPDATE … RETURNING cannot join: a row without a body gets its event's JSON by primary key.
    for (const r of rows) if (r.body === null) r.event = (this.#eventBody.get(r.event_id) as { body: string } | undefined)?.body ?? null;
    // RETURNING gives rows in no promised order.
    return rows.map(claimedOf).sort((a, b) => a.nextAttempt - b.nextAttempt || a.seq - b.seq);
  }

  nextDue(webhookId: string): number | null {
    const row = this.#nextDue.get(webhookId) as { next_attempt: number } | undefined;
    return row ? row.next_attempt : null;
  }

  finish(seq: number): void {
    this.#finish.run(seq);
  }

  finishMany(seqs: readonly number[]): void {
    if (seqs.length === 1) this.#finish.run(seqs[0]!);
    else if (seqs.length > 1) this.#finishMany.run(JSON.stringify(seqs));
  }

  reschedule(seq: number, attempts: number, nextAttempt: number): void {
    this.#reschedule.run(attempts, nextAttempt, seq);
  }

  release(seqs: number[]): void {
    this.#tx(() => {
      for (const s of seqs) this.#release.run(s);
    });
  }

  releaseAllClaims(): number {
    return Number(this.#db.prepare('UPDATE webhook_outbox SET claimed_until = NULL WHERE claimed_until IS NOT NULL').run().changes);
  }

  purgeOutbox(webhookId: string, max: number): number {
    const r = this.#db.prepare('DELETE FROM webhook_outbox WHERE seq IN (SELECT seq FROM webhook_outbox WHERE webhook_id = ? LIMIT ?)').run(webhookId, max);
    return Number(r.changes);
  }

  expireOutbox(before: number, max: number): number {
    const r = this.#db
      .prepare('DELETE FROM webhook_outbox WHERE seq IN (SELECT seq FROM webhook_outbox ORDER BY seq LIMIT ?) AND event_at < ?')
      .run(max, before);
    return Number(r.changes);
  }

  countPending(webhookId: string, limit: number): number {
    return (this.#db.prepare('SELECT COUNT(*) AS n FROM (SELECT 1 FROM webhook_outbox WHERE webhook_id = ? LIMIT ?)').get(webhookId, limit) as { n: number }).n;
  }

  recordDelivery(d: DeliveryRecord): void {
    this.#record.run(d.webhookId, d.eventId, d.attempt, d.at, d.status, d.error, d.durationMs, d.outcome, d.webhookId);
  }

  pruneDeliveries(webhookId: string, keep: number): void {
    this.#prune.run(webhookId, webhookId, keep);
  }

  recentDeliveries(webhookId: string, limit: number): DeliveryRecord[] {
    const rows = this.#db.prepare('SELECT * FROM webhook_deliveries WHERE webhook_id = ? ORDER BY id DESC LIMIT ?').all(webhookId, limit) as unknown as DeliveryRow[];
    return rows.map(deliveryOf);
  }

  close(): void {}
}

export function listingOf(r: WebhookRow): WebhookListing {
  return {
    id: r.id,
    owner: r.owner,
    url: r.url,
    events: r.events === null ? null : (JSON.parse(r.events) as EventType[]),
    secret: r.secret,
    createdAt: r.created_at,
    disabledAt: r.disabled_at,
    disabledReason: r.disabled_reason,
    ownerName: r.owner_name,
  };
}

export function claimedOf(r: OutboxDbRow): ClaimedRow {
  return {
    seq: Number(r.seq),
    webhookId: r.webhook_id,
    eventId: r.event_id,
    eventAt: Number(r.event_at),
    body: r.body,
    event: r.body === null ? (r.event ?? null) : null,
    attempts: Number(r.attempts),
    nextAttempt: Number(r.next_attempt),
  };
}

export function deliveryOf(r: DeliveryRow): DeliveryRecord {
  return {
    webhookId: r.webhook_id,
    eventId: r.event_id,
    attempt: r.attempt,
    at: r.at,
    status: r.status,
    error: r.error,
    durationMs: r.duration_ms,
    outcome: r.outcome as DeliveryOutcome,
  };
}
