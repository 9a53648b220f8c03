// The fan-out into the durable outbox. It runs inside the events' own
// transaction (EventRecorder.alsoWrite), so the rows commit with the events
// or not at all: a stored event is an event that will be announced
// (docs/architecture.md, "Events that leave the process … are written
// durably before they are announced further").
//
// For each event, every enabled webhook whose filter takes its type and
// whose owner key may read it (CONTRACT.md: "a key manages its own
// webhooks, which get the events that key may read") gets one row with the
// exact bytes to POST, built once per event and shared by every webhook.
//
// The webhooks and their owners' scopes are kept in memory and read again
// when the API changes one (invalidate) and at least every
// ACTIVE_REFRESH_MS: keys are revoked by `tern apikey revoke`, another
// process, and that key's webhooks must stop getting events. With no
// webhook, a batch costs one clock read.

import type { EventType, MessageEvent } from '../events/events.ts';
import { mayUseAddress } from '../policy/senders.ts';
import type { StoredEvent } from '../store/store.ts';
import type { ClaimedRow, OutboxInsert, OutboxRow, WebhookStore } from '../store/webhooks.ts';
import { webhookPayload } from './payload.ts';
import { postTarget, type PostTarget } from './post.ts';
import { signingKey, type SigningKey } from './sign.ts';

/** How stale the in-memory webhook list may get: a revoked key's webhooks get no new events after this long. */
export const ACTIVE_REFRESH_MS = 5000;

/** An enabled webhook of an existing key, ready to fan out to and POST to. */
export interface ActiveWebhook {
  id: string;
  url: string;
  /** The key's name, for the log. */
  ownerName: string;
  /** Null: every type. */
  types: ReadonlySet<EventType> | null;
  /** Reads every event (an --admin key's webhook); otherwise `sendAs` decides, as for GET /v1/events. */
  admin: boolean;
  sendAs: string[];
  /** The HMAC key (the bytes of the secret). */
  key: SigningKey;
  target: PostTarget;
}

/** Whether `hook`'s owner may read events of mail from `sender` (the scope of GET /v1/events: src/api/server.ts, scopeOf). */
export function mayRead(hook: Pick<ActiveWebhook, 'admin' | 'sendAs'>, sender: string): boolean {
  return hook.admin || (sender !== '' && mayUseAddress(sender, hook.sendAs));
}

/**
 * The dispatcher, as the fan-out sees it: rows it will take straight from
 * memory (WebhookDispatcher.leaseFor and adopt).
 */
export interface OutboxAdopter {
  /** Until when `n` new rows of the webhook may be leased to this node's dispatcher; null: leave them to a claim. */
  leaseFor(webhookId: string, n: number, now: number): number | null;
  /** Rows written leased (and committed): POST them. */
  adopt(rows: OutboxRow[]): void;
}

export class WebhookOutbox {
  readonly #store: WebhookStore;
  readonly #now: () => number;
  #active: ActiveWebhook[] = [];
  #loadedAt = -Infinity;
  /** Bumped at every reload: the dispatcher compares it to notice added and removed webhooks. */
  #generation = 0;
  /** Webhooks that got unleased rows in the last batch written (cleared before each). */
  #touched = new Set<string>();
  /** Rows of the last batch written leased to the adopter, handed to it once committed (cleared before each). */
  #leased: OutboxRow[] = [];
  #adopter: OutboxAdopter | undefined;

  constructor(store: WebhookStore, now: () => number = Date.now) {
    this.#store = store;
    this.#now = now;
  }

  /** The enabled webhooks of existing keys, read again when older than ACTIVE_REFRESH_MS or invalidated. */
  active(): readonly ActiveWebhook[] {
    if (this.#now() - this.#loadedAt >= ACTIVE_REFRESH_MS) this.#reload();
    return this.#active;
  }

  /**
   * Rows of fresh events are leased to `adopter` as they are written, when
   * the store can (enqueueClaimed) and the dispatcher has room: no claim
   * query, no second write of each row before its POST.
   */
  setAdopter(adopter: OutboxAdopter): void {
    this.#adopter = adopter;
  }

  get generation(): number {
    return this.#generation;
  }

  /** A webhook was created, deleted or disabled here: the next use reads the list again. */
  invalidate(): void {
    this.#loadedAt = -Infinity;
  }

  #reload(): void {
    const active: ActiveWebhook[] = [];
    for (const w of this.#store.activeWebhooks()) {
      try {
        active.push({
          id: w.id,
          url: w.url,
          ownerName: w.ownerName,
          types: w.events === null ? null : new Set(w.events),
          admin: w.ownerAdmin,
          sendAs: w.ownerSendAs,
          key: signingKey(w.secret),
          target: postTarget(new URL(w.url)),
        });
      } catch {
        // The API checked both when the webhook was made; a row edited by hand must not fail the events' transaction (and lose the events).
        continue;
      }
    }
    this.#active = active;
    this.#loadedAt = this.#now();
    this.#generation++;
  }

  /** For EventRecorder.alsoWrite: adds the batch's rows in the caller's transaction. */
  readonly write = (batch: StoredEvent[]): void => {
    if (this.#touched.size > 0) this.#touched = new Set();
    if (this.#leased.length > 0) this.#leased = [];
    const hooks = this.active();
    if (hooks.length === 0) return;
    const now = this.#now();
    // No payload is stored: a row claimed later makes it from the event's own row (../store/webhooks.ts).
    const byHook = new Map<string, { row: OutboxInsert; event: MessageEvent }[]>();
    for (const { event, sender } of batch) {
      let eventAt: number | undefined;
      for (const h of hooks) {
        if (h.types !== null && !h.types.has(event.type)) continue;
        if (!mayRead(h, sender)) continue;
        eventAt ??= Date.parse(event.timestamp);
        let rows = byHook.get(h.id);
        if (!rows) byHook.set(h.id, (rows = []));
        rows.push({ row: { webhookId: h.id, eventId: event.id, eventAt, nextAttempt: now }, event });
      }
    }
    const unleased: OutboxInsert[] = [];
    // One payload per event, whichever webhooks POST it from memory.
    const bodies = new Map<MessageEvent, string>();
    for (const [id, rows] of byHook) {
      const until = this.#adopter && this.#store.enqueueClaimed ? this.#adopter.leaseFor(id, rows.length, now) : null;
      if (until === null) {
        for (const r of rows) unleased.push(r.row);
        this.#touched.add(id);
        continue;
      }
      const seqs = this.#store.enqueueClaimed!(rows.map((r) => r.row), until);
      rows.forEach(({ row, event }, i) => {
        let body = bodies.get(event);
        if (body === undefined) bodies.set(event, (body = webhookPayload(event)));
        this.#leased.push({ seq: seqs[i]!, webhookId: id, eventId: row.eventId, eventAt: row.eventAt, body, attempts: 0, nextAttempt: now });
      });
    }
    if (unleased.length > 0) this.#store.enqueue(unleased);
  };

  /**
   * After the batch committed (EventRecorder.afterWrite: only committed rows
   * are announced): its leased rows go to the adopter, and the dispatcher
   * wakes for the webhooks that got rows to claim.
   */
  committed(wake: (webhookIds: ReadonlySet<string>) => void): void {
    if (this.#leased.length > 0) {
      const leased = this.#leased;
      this.#leased = [];
      this.#adopter?.adopt(leased);
    }
    if (this.#touched.size > 0) wake(this.#touched);
  }

  /** The webhooks that got rows to claim in the last batch. */
  touched(): ReadonlySet<string> {
    return this.#touched;
  }
}

/**
 * A claimed row as the dispatcher POSTs it: with its stored payload, or the
 * payload made again from its event's stored JSON (the same bytes: the
 * payload is a function of the event). Null when neither is there.
 */
export function outboxRowOf(c: ClaimedRow): OutboxRow | null {
  const body = c.body ?? (c.event === null ? null : webhookPayload(JSON.parse(c.event) as MessageEvent));
  if (body === null) return null;
  return { seq: c.seq, webhookId: c.webhookId, eventId: c.eventId, eventAt: c.eventAt, body, attempts: c.attempts, nextAttempt: c.nextAttempt };
}
