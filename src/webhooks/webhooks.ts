// Webhooks as a whole (docs/webhooks.md): what the API manages (the
// routes' WebhookApi), the fan-out into the outbox inside the events'
// transaction, and the dispatcher that POSTs from it. src/tern.ts makes one,
// attaches it to the events recorder and starts it once the server is up.

import { randomBytes } from 'node:crypto';
import type { EventType } from '../events/events.ts';
import type { ApiKeyRecord, StoredEvent } from '../store/store.ts';
import type { DeliveryRecord, WebhookListing, WebhookRecord, WebhookStore } from '../store/webhooks.ts';
import type { Logger } from '../util/log.ts';
import type { WebhookApi } from '../api/webhook-routes.ts';
import { WebhookDispatcher, type DispatcherCounters } from './dispatcher.ts';
import { WebhookOutbox } from './outbox.ts';
import { newSecret } from './sign.ts';

/** Attempts shown per webhook by GET /v1/webhooks (the store keeps DELIVERIES_KEPT). */
export const DELIVERIES_SHOWN = 20;
/** Pending rows counted per webhook at most: the count stays cheap whatever the backlog. */
export const PENDING_COUNTED = 10_000;

/** A webhook as GET /v1/webhooks shows it: its record, its backlog and its last attempts. */
export interface WebhookView extends WebhookListing {
  /** Events waiting, counted up to PENDING_COUNTED. */
  pending: number;
  /** Newest first. */
  deliveries: DeliveryRecord[];
}

/** The part of the events recorder (src/api/events-store.ts) webhooks hook into. */
export interface EventWriter {
  alsoWrite(write: (batch: StoredEvent[]) => void): () => void;
  afterWrite(fn: (batch: StoredEvent[]) => void): void;
}

export interface WebhooksOptions {
  store: WebhookStore;
  log: Logger;
  /** webhooks.timeout, webhooks.retryFor, webhooks.concurrency. */
  timeoutMs: number;
  retryForMs: number;
  concurrency: number;
  /** Delays between attempts (retry.ts's RETRY_SCHEDULE by default); tests make them short. */
  schedule?: readonly number[] | undefined;
  /** The outbox is shared with other nodes (PostgreSQL): look for their due rows now and then (dispatcher.ts). */
  shared?: boolean | undefined;
  sharedPollMs?: number | undefined;
}

export class Webhooks implements WebhookApi {
  readonly #store: WebhookStore;
  readonly #outbox: WebhookOutbox;
  readonly #dispatcher: WebhookDispatcher;
  readonly #log: Logger;

  constructor(o: WebhooksOptions) {
    this.#store = o.store;
    this.#log = o.log;
    this.#outbox = new WebhookOutbox(o.store);
    this.#dispatcher = new WebhookDispatcher({ ...o, outbox: this.#outbox });
    this.#outbox.setAdopter(this.#dispatcher);
  }

  /** What the dispatcher did since start (tern_webhook_deliveries_total{result}). */
  get counters(): Readonly<DispatcherCounters> {
    return this.#dispatcher.counters;
  }

  /** Outbox rows commit in the recorder's transaction; after each commit, the dispatcher takes the rows leased to it and wakes for the others. */
  attach(recorder: EventWriter): void {
    recorder.alsoWrite(this.#outbox.write);
    recorder.afterWrite(() => this.#outbox.committed((touched) => this.#dispatcher.wake(touched)));
  }

  /** Starts delivering (after the listeners are bound, as mail starts moving only then). */
  start(): void {
    this.#dispatcher.start();
  }

  /** Stops delivering; call after the recorder's last write and before the store closes. */
  close(): void {
    this.#dispatcher.close();
  }

  // WebhookApi

  create(owner: ApiKeyRecord, url: string, events: EventType[] | null): WebhookRecord {
    const w: WebhookRecord = {
      id: `wh_${randomBytes(12).toString('hex')}`,
      owner: owner.hash,
      url,
      events,
      secret: newSecret(),
      createdAt: Date.now(),
      disabledAt: null,
      disabledReason: null,
    };
    this.#store.addWebhook(w);
    // The next batch of events already fans out to it.
    this.#outbox.invalidate();
    return w;
  }

  countOwn(owner: ApiKeyRecord): number {
    return this.#store.countWebhooks(owner.hash);
  }

  list(viewer: ApiKeyRecord): WebhookView[] {
    // Attempts that ended in the last few milliseconds are shown too (if the store takes them now; the dispatcher keeps them otherwise).
    try {
      this.#dispatcher.flush();
    } catch (e) {
      this.#log.error('webhook results not written', { error: e });
    }
    return this.#store.listWebhooks(viewer.admin ? null : viewer.hash).map((w) => ({
      ...w,
      pending: this.#store.countPending(w.id, PENDING_COUNTED),
      deliveries: this.#store.recentDeliveries(w.id, DELIVERIES_SHOWN),
    }));
  }

  /**
   * The webhooks or the keys changed elsewhere (another node, told by the
   * shared store's NOTIFY): read the active list again before the next event,
   * instead of up to ACTIVE_REFRESH_MS later.
   */
  changedElsewhere(): void {
    this.#outbox.invalidate();
    this.#dispatcher.refresh();
  }

  remove(viewer: ApiKeyRecord, id: string): boolean {
    const w = this.#store.getWebhook(id);
    if (!w || (!viewer.admin && w.owner !== viewer.hash)) return false;
    this.#store.deleteWebhook(id);
    this.#outbox.invalidate();
    // The dispatcher drops it and deletes its outbox rows.
    this.#dispatcher.refresh();
    return true;
  }
}
