// PostgreSQL implementation of WebhookStore (src/store/webhooks.ts says what
// each table holds). The statements are the embedded store's, ported; what
// differs comes from several nodes sharing one outbox:
//
// - claim locks the rows it leases (FOR UPDATE SKIP LOCKED) inside the one
//   UPDATE that leases them. Two nodes claiming at once each skip the rows
//   the other is leasing rather than wait for them, and a row leased by a
//   transaction that committed just before is re-checked against its new
//   claimed_until (READ COMMITTED re-evaluates the WHERE on the latest row
//   version: PostgreSQL docs, "Transaction Isolation", 13.2.1), so it is not
//   handed out twice.
// - releaseAllClaims ends only leases that have run out: the others belong
//   to live nodes.
// - nextDue counts a leased row as due when its lease ends, so a node whose
//   only rows of a webhook are a dead node's still comes back for them.
//
// Lists of values are bound as arrays (unnest, = ANY): one statement text
// and one round trip whatever the count, where node:sqlite ran a prepared
// statement per row at no cost.

import { randomUUID } from 'node:crypto';
import type { SyncPgClient } from './sync-client.ts';
import type { Transaction } from './tx.ts';
import type {
  ActiveWebhookRecord,
  DeliveryRecord,
  OutboxInsert,
  OutboxRow,
  WebhookListing,
  WebhookRecord,
  WebhookStore,
} from '../webhooks.ts';
import { claimedOf, deliveryOf, LISTING, listingOf, type ClaimedRow, type DeliveryRow, type OutboxDbRow, type WebhookRow } from '../webhooks.ts';

/** SQLite's order (ids compared as bytes) whatever the database's collation: a sort of a few rows. */
const OLDEST_FIRST = 'w.created_at, w.id COLLATE "C"';

/**
 * The outbox's statements, exported so a test can read their plans. Each
 * walks an index to what it needs, as the embedded store's do.
 */
export const PG_WEBHOOK_SQL = {
  // Due and unleased (or leased by a node that died or stalled past its
  // lease), earliest first. SKIP LOCKED: rows another node is claiming right
  // now are left to it, not waited for; ORDER BY with LIMIT then gives the
  // earliest of the rows nobody else holds. The order is the index's
  // (webhook_outbox_due), with no tie-break: so the walk stops after `max`
  // rows instead of sorting a webhook's whole backlog first.
  // A row without a body gets its event's JSON (schema step 4; ../webhooks.ts), by
  // primary key for each claimed row: a join may scan every event instead.
  claim: `WITH c AS (
       UPDATE webhook_outbox SET claimed_until = $1, claimed_by = $5
       WHERE seq IN (SELECT seq FROM webhook_outbox
                     WHERE webhook_id = $2 AND next_attempt <= $3 AND (claimed_until IS NULL OR claimed_until < $3)
                     ORDER BY next_attempt LIMIT $4
                     FOR UPDATE SKIP LOCKED)
       RETURNING seq, webhook_id, event_id, event_at, body, attempts, next_attempt)
     SELECT c.*, CASE WHEN c.body IS NULL THEN (SELECT e.body FROM events e WHERE e.id = c.event_id) END AS event FROM c`,
  // Unleased rows: their next attempt, through webhook_outbox_due. Leased
  // rows (few: at most each node's prefetch, through the partial index
  // webhook_outbox_claimed): due again the millisecond after the lease ends,
  // which is after their next attempt (a row is leased only once due).
  nextDue: `SELECT least(
       (SELECT next_attempt FROM webhook_outbox WHERE webhook_id = $1 AND claimed_until IS NULL ORDER BY next_attempt LIMIT 1),
       (SELECT claimed_until + 1 FROM webhook_outbox WHERE webhook_id = $1 AND claimed_until IS NOT NULL ORDER BY claimed_until LIMIT 1)
     ) AS due`,
};

class PgWebhookStore implements WebhookStore {
  readonly #db: SyncPgClient;
  readonly #tx: Transaction;
  /**
   * This store's claims carry it (claimed_by), and its results touch only
   * rows that still carry it: a fencing token. After a stall past the lease
   * another node may have claimed the row again; the late result then
   * changes nothing (its POST went out twice, with the same webhook-id,
   * which at-least-once delivery allows).
   */
  readonly #holder = `node-${randomUUID()}`;

  constructor(db: SyncPgClient, tx: Transaction) {
    this.#db = db;
    this.#tx = tx;
  }

  transaction<T>(fn: () => T): T {
    return this.#tx(fn);
  }

  addWebhook(w: WebhookRecord): void {
    this.#db.query(
      'INSERT INTO webhooks (id, owner, url, events, secret, created_at, disabled_at, disabled_reason) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)',
      [w.id, w.owner, w.url, w.events === null ? null : JSON.stringify(w.events), w.secret, w.createdAt, w.disabledAt, w.disabledReason],
    );
  }

  countWebhooks(owner: string): number {
    return this.#db.one<{ n: number }>('SELECT COUNT(*) AS n FROM webhooks WHERE owner = $1', [owner])!.n;
  }

  getWebhook(id: string): WebhookListing | null {
    const row = this.#db.one<WebhookRow>(`${LISTING} WHERE w.id = $1`, [id]);
    return row ? listingOf(row) : null;
  }

  listWebhooks(owner: string | null): WebhookListing[] {
    const rows =
      owner === null
        ? this.#db.rows<WebhookRow>(`${LISTING} ORDER BY ${OLDEST_FIRST}`)
        : this.#db.rows<WebhookRow>(`${LISTING} WHERE w.owner = $1 ORDER BY ${OLDEST_FIRST}`, [owner]);
    return rows.map(listingOf);
  }

  deleteWebhook(id: string): boolean {
    return this.#tx(() => {
      this.#db.query('DELETE FROM webhook_deliveries WHERE webhook_id = $1', [id]);
      return this.#db.query('DELETE FROM webhooks WHERE id = $1', [id]).rowCount > 0;
    });
  }

  disableWebhook(id: string, at: number, reason: string): boolean {
    // One statement: of two nodes disabling at once, the second finds disabled_at set (after waiting for the first's row lock) and changes nothing.
    const r = this.#db.query('UPDATE webhooks SET disabled_at = $1, disabled_reason = $2 WHERE id = $3 AND disabled_at IS NULL', [at, reason, id]);
    return r.rowCount > 0;
  }

  activeWebhooks(): ActiveWebhookRecord[] {
    const rows = this.#db.rows<WebhookRow & { owner_name: string; owner_send_as: string; owner_admin: number }>(
      `SELECT w.*, k.name AS owner_name, k.send_as AS owner_send_as, k.admin AS owner_admin
       FROM webhooks w JOIN api_keys k ON k.hash = w.owner WHERE w.disabled_at IS NULL ORDER BY ${OLDEST_FIRST}`,
    );
    return rows.map((r) => ({ ...listingOf(r), ownerName: r.owner_name, ownerSendAs: JSON.parse(r.owner_send_as) as string[], ownerAdmin: r.owner_admin === 1 }));
  }

  enqueue(rows: OutboxInsert[]): void {
    if (rows.length === 0) return;
    // unnest keeps the arrays' order, so seq numbers the rows as given, as the embedded store's one INSERT per row does.
    // Deferred: it goes with the events transaction's COMMIT (sync-client.ts).
    this.#db.defer(
      `INSERT INTO webhook_outbox (webhook_id, event_id, event_at, body, next_attempt)
       SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::bigint[])`,
      [rows.map((r) => r.webhookId), rows.map((r) => r.eventId), rows.map((r) => r.eventAt), rows.map((r) => r.body ?? null), rows.map((r) => r.nextAttempt)],
    );
  }

  // No enqueueClaimed: the insert above is deferred to the events' COMMIT, so
  // its seqs are not known when the dispatcher could take the rows; they are
  // claimed like every other node's (one UPDATE … RETURNING per tick).

  claim(webhookId: string, now: number, leaseUntil: number, max: number): ClaimedRow[] {
    if (max <= 0) return [];
    const rows = this.#db.rows<OutboxDbRow>(PG_WEBHOOK_SQL.claim, [leaseUntil, webhookId, now, max, this.#holder]);
    // RETURNING gives rows in no promised order.
    return rows.map(claimedOf).sort((a, b) => a.nextAttempt - b.nextAttempt || a.seq - b.seq);
  }

  nextDue(webhookId: string): number | null {
    return this.#db.one<{ due: number | null }>(PG_WEBHOOK_SQL.nextDue, [webhookId])!.due;
  }

  finish(seq: number): void {
    this.finishMany([seq]);
  }

  finishMany(seqs: readonly number[]): void {
    if (seqs.length === 0) return;
    this.#db.query('DELETE FROM webhook_outbox WHERE seq = ANY($1::bigint[]) AND claimed_by = $2', [seqs, this.#holder]);
  }

  reschedule(seq: number, attempts: number, nextAttempt: number): void {
    this.#db.query('UPDATE webhook_outbox SET attempts = $1, next_attempt = $2, claimed_until = NULL, claimed_by = NULL WHERE seq = $3 AND claimed_by = $4', [
      attempts,
      nextAttempt,
      seq,
      this.#holder,
    ]);
  }

  release(seqs: number[]): void {
    if (seqs.length === 0) return;
    this.#db.query('UPDATE webhook_outbox SET claimed_until = NULL, claimed_by = NULL WHERE seq = ANY($1::bigint[]) AND claimed_by = $2', [seqs, this.#holder]);
  }

  /**
   * Ends the leases that have run out, and only those. The embedded store
   * ends every lease, because one server uses a data directory and a lease
   * found at start is a dead process's; here other nodes share the outbox,
   * and a lease in the future is a live node's rows in flight: ending it
   * would send them a second time. A restarted node's own rows come back
   * when their lease ends (claim and nextDue treat a lease that ran out as
   * none); this only tidies them up.
   */
  releaseAllClaims(): number {
    // The leases were written with the claiming nodes' clocks, so this node's clock decides, as claim's `now` does.
    return this.#db.query('UPDATE webhook_outbox SET claimed_until = NULL, claimed_by = NULL WHERE claimed_until < $1', [Date.now()]).rowCount;
  }

  purgeOutbox(webhookId: string, max: number): number {
    return this.#db.query('DELETE FROM webhook_outbox WHERE seq IN (SELECT seq FROM webhook_outbox WHERE webhook_id = $1 LIMIT $2)', [webhookId, max]).rowCount;
  }

  expireOutbox(before: number, max: number): number {
    return this.#db.query('DELETE FROM webhook_outbox WHERE seq IN (SELECT seq FROM webhook_outbox ORDER BY seq LIMIT $1) AND event_at < $2', [max, before]).rowCount;
  }

  countPending(webhookId: string, limit: number): number {
    return this.#db.one<{ n: number }>('SELECT COUNT(*) AS n FROM (SELECT 1 FROM webhook_outbox WHERE webhook_id = $1 LIMIT $2) AS pending', [webhookId, limit])!.n;
  }

  recordDelivery(d: DeliveryRecord): void {
    // Only for a webhook that still exists: an attempt that ends after a DELETE leaves nothing behind.
    this.#db.query(
      `INSERT INTO webhook_deliveries (webhook_id, event_id, attempt, at, status, error, duration_ms, outcome)
       SELECT $1::text, $2::text, $3::bigint, $4::bigint, $5::bigint, $6::text, $7::bigint, $8::text WHERE EXISTS (SELECT 1 FROM webhooks WHERE id = $1::text)`,
      [d.webhookId, d.eventId, d.attempt, d.at, d.status, d.error, d.durationMs, d.outcome],
    );
  }

  pruneDeliveries(webhookId: string, keep: number): void {
    this.#db.query(
      `DELETE FROM webhook_deliveries WHERE webhook_id = $1 AND id <=
         (SELECT id FROM webhook_deliveries WHERE webhook_id = $1 ORDER BY id DESC LIMIT 1 OFFSET $2)`,
      [webhookId, keep],
    );
  }

  recentDeliveries(webhookId: string, limit: number): DeliveryRecord[] {
    const rows = this.#db.rows<DeliveryRow>('SELECT * FROM webhook_deliveries WHERE webhook_id = $1 ORDER BY id DESC LIMIT $2', [webhookId, limit]);
    return rows.map(deliveryOf);
  }

  /** The connection is the whole store's: it closes it. */
  close(): void {}
}

export function pgWebhookStore(db: SyncPgClient, tx: Transaction): WebhookStore {
  return new PgWebhookStore(db, tx);
}


