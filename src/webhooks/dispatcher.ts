// The webhook dispatcher: takes due rows from the outbox, POSTs them with
// Standard Webhooks headers, and records what came of each attempt.
//
// Nothing here is on the mail path: the outbox rows were committed with the
// events, and everything after happens on this dispatcher's own timer, so a
// dead or slow endpoint costs retries, never a slower SMTP or API answer.
//
// Like the scheduler's time index (docs/architecture.md), one timer is armed
// for the earliest due row; a wake-up claims only what is due, per webhook,
// through the (webhook_id, next_attempt) index. Between wake-ups nothing
// runs, whatever the size of the outbox.
//
// Fresh events skip the claim: the fan-out writes their rows already leased
// to this dispatcher (when the store can say their seqs at once, and the
// webhook is healthy and not too far behind: leaseFor) and hands them over
// once the events' transaction commits (adopt). A row is then written once
// and deleted once; a claim would have rewritten it (and read its body back)
// in between, which cost more than the POST.
//
// The store's writes are batched the way the events recorder batches:
// claims, results and delivery records of one tick share one transaction
// (one WAL commit), because a commit per POST would cost more than the POST.
// A claim takes a few rows ahead (PREFETCH_PER_SLOT per slot the webhook may
// use), under a lease; the POSTs start from memory as slots free up, and
// their results are written at the next tick, at most FLUSH_MS later. A
// crash before that write sends those events again after the restart:
// delivery is at least once, with the same webhook-id, so receivers can
// drop duplicates.
//
// Fairness between webhooks, after qmgr's between destinations: slots go
// round-robin to webhooks with rows ready, and a webhook whose last attempt
// failed gets one slot (a probe) until an attempt succeeds again, so an
// endpoint that times out cannot take every slot from the healthy ones.

import type { Logger } from '../util/log.ts';
import type { OutboxRow, WebhookStore } from '../store/webhooks.ts';
import { deleteInBatches } from '../util/batches.ts';
import { countWebhookDelivery } from '../metrics/webhooks.ts';
import { outboxRowOf, type ActiveWebhook, type OutboxAdopter, type WebhookOutbox } from './outbox.ts';
import { WebhookPoster, type PostResult } from './post.ts';
import { nextAttempt, RETRY_SCHEDULE } from './retry.ts';
import { signature } from './sign.ts';

export interface DispatcherOptions {
  store: WebhookStore;
  outbox: WebhookOutbox;
  log: Logger;
  /** One attempt's limit, connection to the last byte of the answer (webhooks.timeout). */
  timeoutMs: number;
  /** How long after the event it is retried (webhooks.retryFor). */
  retryForMs: number;
  /** POSTs in flight at once, over every webhook (webhooks.concurrency). */
  concurrency: number;
  /** Delays between attempts (retry.ts); tests make them short. */
  schedule?: readonly number[] | undefined;
  random?: () => number;
  /**
   * Other nodes write to the same outbox (PostgreSQL, issue 17): rows they
   * committed (their events, their retries) or left leased when they died are
   * not announced here, so every SHARED_POLL_MS each webhook's next due time
   * is read again. One small query per webhook; nothing when not shared.
   */
  shared?: boolean | undefined;
  /** How often a shared outbox is looked at (SHARED_POLL_MS; tests make it short). */
  sharedPollMs?: number | undefined;
}

/** With a shared outbox, how long another node's due row can wait unnoticed. */
export const SHARED_POLL_MS = 5000;

/** Rows claimed ahead per slot a webhook may use: a claim (a commit) serves this many POSTs. */
const PREFETCH_PER_SLOT = 8;
/** The most rows claimed ahead for one webhook. */
const MAX_PREFETCH = 64;
/** Rows of fresh events a webhook may hold from memory (adopt) before new ones are left to claims: memory and lease length stay bounded. */
const MAX_ADOPTED = 512;
/** Results wait at most this long to be written (one commit for all of them). */
const FLUSH_MS = 200;
/** Written at once, without waiting for FLUSH_MS, when this many results wait. */
const FLUSH_RESULTS = 1024;
/** Attempts kept per webhook for GET /v1/webhooks and the dashboard. */
export const DELIVERIES_KEPT = 100;
/**
 * A lease lasts this long past the longest its rows can wait in memory: a
 * dispatcher that died (or, with several nodes, one that stalled) gives its
 * rows back to the others after that. At start the embedded store ends every
 * lease at once (one server per data directory: ControlServer.refuseIfRunning);
 * a shared store ends only expired ones (the others are live nodes').
 */
const LEASE_MARGIN_MS = 60_000;
/** Rows deleted per statement when a webhook goes, or old rows expire. */
const PURGE_BATCH = 1000;
/** How often rows older than retryFor are looked for (what the attempts did not give up: a backlog that never got its turn). */
const EXPIRY_INTERVAL_MS = 60_000;
/** A row gets this long past retryFor for its last attempt before the expiry pass deletes it unsent. */
const EXPIRY_GRACE_MS = 3600_000;

/** What the dispatcher did since start (for metrics: tern_webhook_deliveries_total{result}). */
export interface DispatcherCounters {
  /** Answered 2xx. */
  delivered: number;
  /** Failed and scheduled again. */
  retrying: number;
  /** Failed for the last time (retryFor passed). */
  failed: number;
  /** Answered 410: the webhook was disabled. */
  disabled: number;
}

/** A webhook's dispatch state. */
interface HookState {
  hook: ActiveWebhook;
  /** Claimed rows not yet POSTed, due order. */
  ready: OutboxRow[];
  inFlight: number;
  /** The earliest next attempt of its unclaimed rows, as last read or written; null: none. */
  nextDue: number | null;
  /** The last attempt failed: one POST at a time until one succeeds. */
  failing: boolean;
  /** Answered 410: nothing more is sent. */
  gone: boolean;
}

/** A finished attempt, waiting for the next tick to be written. */
interface Done {
  hook: ActiveWebhook;
  row: OutboxRow;
  at: number;
  result: PostResult;
}

export class WebhookDispatcher implements OutboxAdopter {
  readonly counters: DispatcherCounters = { delivered: 0, retrying: 0, failed: 0, disabled: 0 };
  readonly #store: WebhookStore;
  readonly #outbox: WebhookOutbox;
  readonly #log: Logger;
  readonly #timeoutMs: number;
  readonly #retryForMs: number;
  readonly #concurrency: number;
  readonly #schedule: readonly number[];
  readonly #random: () => number;
  readonly #poster: WebhookPoster;
  readonly #states = new Map<string, HookState>();
  /** Every row held in memory (ready or in flight), by seq: a claim never hands us one twice. */
  readonly #held = new Set<number>();
  #done: Done[] = [];
  #release: number[] = [];
  #inFlight = 0;
  /** Where round-robin goes on from. */
  #turn = 0;
  #generation = -1;
  #timer: NodeJS.Timeout | undefined;
  #timerAt = Infinity;
  /** The tick asked for: this turn (an Immediate) or within FLUSH_MS (a Timeout). */
  #tickNow: NodeJS.Immediate | undefined;
  #tickLater: NodeJS.Timeout | undefined;
  #expiry: NodeJS.Timeout | undefined;
  #started = false;
  #closed = false;
  #purging = new Set<string>();
  readonly #shared: boolean;
  readonly #sharedPollMs: number;
  #poll: NodeJS.Timeout | undefined;

  constructor(o: DispatcherOptions) {
    this.#store = o.store;
    this.#outbox = o.outbox;
    this.#log = o.log;
    this.#timeoutMs = o.timeoutMs;
    this.#retryForMs = o.retryForMs;
    this.#concurrency = o.concurrency;
    this.#schedule = o.schedule ?? RETRY_SCHEDULE;
    this.#random = o.random ?? Math.random;
    this.#poster = new WebhookPoster({ timeoutMs: o.timeoutMs, maxSockets: o.concurrency });
    this.#shared = o.shared === true;
    this.#sharedPollMs = o.sharedPollMs ?? SHARED_POLL_MS;
  }

  /** Reads every webhook's next due time again (a shared outbox: see DispatcherOptions.shared). */
  #pollShared(): void {
    if (this.#closed) return;
    try {
      for (const s of this.#states.values()) if (!s.gone) s.nextDue = this.#store.nextDue(s.hook.id);
    } catch (e) {
      this.#log.warn('webhook outbox poll failed', { error: e });
      return;
    }
    this.#soon(0);
  }

  /** Ends the leases of a previous run (a kill -9 mid-POST: those events go out again) and starts the timer. */
  start(): void {
    if (this.#started || this.#closed) return;
    this.#started = true;
    const released = this.#store.releaseAllClaims();
    if (released > 0) this.#log.info('webhook deliveries resumed', { released });
    this.#expiry = setInterval(() => void this.expire(), EXPIRY_INTERVAL_MS);
    this.#expiry.unref();
    if (this.#shared) {
      this.#poll = setInterval(() => this.#pollShared(), this.#sharedPollMs);
      this.#poll.unref();
    }
    this.#tick();
  }

  /** New rows for these webhooks were committed (EventRecorder.afterWrite): they are due now. */
  wake(webhookIds: Iterable<string>): void {
    if (!this.#started || this.#closed) return;
    const now = Date.now();
    let any = false;
    for (const id of webhookIds) {
      const s = this.#states.get(id);
      // A webhook not known yet is read with its nextDue at the next tick's sync.
      if (s) s.nextDue = s.nextDue === null ? now : Math.min(s.nextDue, now);
      any = true;
    }
    if (any) this.#soon(0);
  }

  leaseFor(webhookId: string, n: number, now: number): number | null {
    const s = this.#states.get(webhookId);
    // A failing webhook gets one probe at a time from claims; one not known yet is read at the next tick.
    if (!this.#started || this.#closed || !s || s.gone || s.failing) return null;
    const backlog = s.ready.length + s.inFlight + n;
    if (backlog > MAX_ADOPTED) return null;
    return this.#leaseUntil(now, s, backlog);
  }

  adopt(rows: OutboxRow[]): void {
    for (const row of rows) {
      const s = this.#states.get(row.webhookId);
      if (this.#closed || !s || s.gone) {
        // Gone since leaseFor (cannot happen between a write and its commit, but the lease must not outlive us if it does).
        if (!this.#closed) this.#release.push(row.seq);
        continue;
      }
      this.#held.add(row.seq);
      s.ready.push(row);
    }
    this.#startPosts();
  }

  /** The webhook list changed (a delete): follow it soon, without waiting for a due row. */
  refresh(): void {
    if (this.#started) this.#soon(0);
  }

  /** Writes the results gathered so far (GET /v1/webhooks shows them). */
  flush(): void {
    if (this.#closed || (this.#done.length === 0 && this.#release.length === 0)) return;
    const done = this.#done;
    const release = this.#release;
    try {
      this.#store.transaction(() => this.#writeResults(Date.now()));
    } catch (e) {
      this.#done = [...done, ...this.#done];
      this.#release = [...release, ...this.#release];
      throw e;
    }
  }

  /**
   * Stops: no new POSTs, those in flight are abandoned (their rows stay
   * leased, and the next start sends them again), results already in are
   * written. Call before the store closes.
   */
  close(): void {
    if (this.#closed) return;
    try {
      this.flush();
    } catch (e) {
      this.#log.error('webhook results not written', { error: e });
    }
    this.#closed = true;
    clearTimeout(this.#timer);
    clearImmediate(this.#tickNow);
    clearTimeout(this.#tickLater);
    clearInterval(this.#expiry);
    clearInterval(this.#poll);
    this.#poster.close();
  }

  /** Deletes rows of events older than retryFor (and its grace) that no attempt gave up, a batch per turn. */
  async expire(now = Date.now()): Promise<number> {
    const before = now - this.#retryForMs - EXPIRY_GRACE_MS;
    try {
      const n = await deleteInBatches((limit) => this.#store.expireOutbox(before, limit), PURGE_BATCH, () => this.#closed);
      if (n > 0) this.#log.warn('webhook events given up unsent', { events: n, olderThan: new Date(before).toISOString() });
      return n;
    } catch (e) {
      this.#log.error('webhook outbox expiry failed', { error: e });
      return 0;
    }
  }

  /** A tick within `ms` (0: this turn of the event loop), unless one is already that close. */
  #soon(ms: number): void {
    if (this.#closed || this.#tickNow !== undefined) return;
    if (ms === 0) {
      clearTimeout(this.#tickLater);
      this.#tickLater = undefined;
      this.#tickNow = setImmediate(() => {
        this.#tickNow = undefined;
        this.#tick();
      });
    } else if (this.#tickLater === undefined) {
      this.#tickLater = setTimeout(() => {
        this.#tickLater = undefined;
        this.#tick();
      }, ms);
    }
  }

  /** One round: write results, claim what is due, start POSTs, arm the timer. */
  #tick(): void {
    if (this.#closed) return;
    const now = Date.now();
    const done = this.#done;
    const release = this.#release;
    try {
      this.#store.transaction(() => {
        this.#sync();
        this.#writeResults(now);
        // A 410 just disabled a webhook: drop it (and purge its rows) before claiming.
        this.#sync();
        this.#claim(now);
      });
    } catch (e) {
      // The store is unwell (disk full, locked): the results wait for the next try; the rows are safe where they are.
      this.#done = [...done, ...this.#done];
      this.#release = [...release, ...this.#release];
      this.#log.error('webhook dispatch failed', { error: e });
      this.#arm(now + 1000);
      return;
    }
    this.#startPosts();
    this.#arm(this.#earliest(now));
  }

  /** Follows the active list: new webhooks get a state (and their next due time), gone ones are dropped and purged. */
  #sync(): void {
    const active = this.#outbox.active();
    if (this.#outbox.generation === this.#generation) return;
    this.#generation = this.#outbox.generation;
    const ids = new Set(active.map((h) => h.id));
    for (const [id, s] of this.#states) {
      if (ids.has(id)) continue;
      // Deleted, disabled, or its key revoked: its rows will never be sent.
      for (const r of s.ready) this.#held.delete(r.seq);
      this.#states.delete(id);
      this.#purge(id);
    }
    for (const hook of active) {
      const s = this.#states.get(hook.id);
      if (s) s.hook = hook;
      else this.#states.set(hook.id, { hook, ready: [], inFlight: 0, nextDue: this.#store.nextDue(hook.id), failing: false, gone: false });
    }
  }

  #writeResults(now: number): void {
    const done = this.#done;
    const release = this.#release;
    this.#done = [];
    this.#release = [];
    if (release.length > 0) this.#store.release(release);
    // Only the newest DELIVERIES_KEPT attempts per webhook are kept: older ones of this batch would be pruned as soon as written, so they are not.
    const unrecorded = new Map<string, number>();
    for (const d of done) unrecorded.set(d.hook.id, (unrecorded.get(d.hook.id) ?? 0) + 1);
    for (const [id, n] of unrecorded) unrecorded.set(id, n - DELIVERIES_KEPT);
    const finished: number[] = [];
    let disabled = false;
    for (const d of done) {
      const { hook, row, result } = d;
      const attempt = row.attempts + 1;
      const record = (outcome: 'delivered' | 'retrying' | 'failed' | 'disabled'): void => {
        const skip = unrecorded.get(hook.id)!;
        unrecorded.set(hook.id, skip - 1);
        if (skip > 0) return;
        this.#store.recordDelivery({ webhookId: hook.id, eventId: row.eventId, attempt, at: d.at, status: result.status, error: result.error, durationMs: result.ms, outcome });
      };
      if (result.status !== null && result.status >= 200 && result.status < 300) {
        finished.push(row.seq);
        record('delivered');
        this.counters.delivered++;
      } else if (result.status === 410) {
        // Standard Webhooks: 410 Gone means the receiver wants no more; the webhook is disabled, its rows purged.
        finished.push(row.seq);
        if (this.#store.disableWebhook(hook.id, now, `the endpoint answered 410 Gone at ${new Date(d.at).toISOString()}`)) {
          this.#log.warn('webhook disabled', { webhook: hook.id, key: hook.ownerName, url: hook.url, status: 410 });
        }
        record('disabled');
        this.counters.disabled++;
        disabled = true;
      } else {
        const next = nextAttempt(attempt, now, row.eventAt + this.#retryForMs, this.#schedule, this.#random);
        const why = result.status !== null ? `HTTP ${result.status}` : result.error;
        if (next === null) {
          finished.push(row.seq);
          record('failed');
          this.counters.failed++;
          this.#log.warn('webhook event given up', { webhook: hook.id, key: hook.ownerName, event: row.eventId, attempts: attempt, last: why });
        } else {
          this.#store.reschedule(row.seq, attempt, next);
          record('retrying');
          this.counters.retrying++;
          const s = this.#states.get(hook.id);
          if (s && !s.gone) s.nextDue = s.nextDue === null ? next : Math.min(s.nextDue, next);
        }
      }
    }
    this.#store.finishMany(finished);
    for (const id of unrecorded.keys()) this.#store.pruneDeliveries(id, DELIVERIES_KEPT);
    if (disabled) this.#outbox.invalidate();
  }

  /** For every webhook with room and rows due: claim up to its prefetch. */
  #claim(now: number): void {
    for (const s of this.#states.values()) {
      if (s.gone || s.nextDue === null || s.nextDue > now) continue;
      const want = this.#prefetch(s) - s.ready.length - s.inFlight;
      if (want <= 0) continue;
      const leaseUntil = this.#leaseUntil(now, s, s.ready.length + s.inFlight + want);
      const gone: number[] = [];
      for (const claimed of this.#store.claim(s.hook.id, now, leaseUntil, want)) {
        if (this.#held.has(claimed.seq)) continue;
        const row = outboxRowOf(claimed);
        if (!row) {
          gone.push(claimed.seq);
          continue;
        }
        this.#held.add(row.seq);
        s.ready.push(row);
      }
      if (gone.length > 0) {
        // Its payload is made from the stored event, and events.retention removed it before the retries ended.
        this.#store.finishMany(gone);
        this.counters.failed += gone.length;
        this.#log.warn('webhook events given up: no longer stored (events.retention is shorter than webhooks.retryFor)', { webhook: s.hook.id, events: gone.length });
      }
      s.nextDue = this.#store.nextDue(s.hook.id);
    }
  }

  /** A lease long enough for `backlog` rows to be POSTed, each within the timeout, at the webhook's slots. */
  #leaseUntil(now: number, s: HookState, backlog: number): number {
    return now + (Math.ceil(backlog / this.#limit(s)) + 1) * this.#timeoutMs + LEASE_MARGIN_MS;
  }

  /** Slots a webhook may use at once. */
  #limit(s: HookState): number {
    return s.failing ? 1 : this.#concurrency;
  }

  #prefetch(s: HookState): number {
    return s.failing ? 1 : Math.min(MAX_PREFETCH, this.#limit(s) * PREFETCH_PER_SLOT);
  }

  /** Round-robin over webhooks with ready rows until the slots are full. */
  #startPosts(): void {
    const states = [...this.#states.values()];
    let idle = 0;
    while (this.#inFlight < this.#concurrency && states.length > 0 && idle < states.length) {
      const s = states[this.#turn++ % states.length]!;
      if (s.gone || s.ready.length === 0 || s.inFlight >= this.#limit(s)) {
        idle++;
        continue;
      }
      idle = 0;
      this.#post(s, s.ready.shift()!);
    }
  }

  #post(s: HookState, row: OutboxRow): void {
    const { hook } = s;
    const at = Date.now();
    const timestamp = Math.floor(at / 1000);
    const body = Buffer.from(row.body, 'utf8');
    s.inFlight++;
    this.#inFlight++;
    void this.#poster
      .postEvent(hook.target, row.eventId, timestamp, signature(hook.key, row.eventId, timestamp, body), body)
      .then((result) => this.#finished(s, row, at, result));
  }

  #finished(s: HookState, row: OutboxRow, at: number, result: PostResult): void {
    s.inFlight--;
    this.#inFlight--;
    this.#held.delete(row.seq);
    if (this.#closed) return;
    this.#done.push({ hook: s.hook, row, at, result });
    const ok = result.status !== null && result.status >= 200 && result.status < 300;
    countWebhookDelivery(ok ? 'delivered' : 'failed');
    if (result.status === 410) {
      s.gone = true;
      this.#releaseReady(s);
    } else if (ok) {
      s.failing = false;
    } else if (!s.failing) {
      // One probe at a time from now on: what was claimed ahead goes back, due as it was.
      s.failing = true;
      this.#releaseReady(s);
    }
    this.#startPosts();
    // Only this webhook can have run dry since the last tick: the others claimed all they had room for then.
    const starved = !s.gone && s.ready.length === 0 && s.nextDue !== null && s.nextDue <= Date.now();
    // A failure is written at once (its retry is scheduled by that write); successes wait to share a commit.
    this.#soon(starved || !ok || this.#done.length >= FLUSH_RESULTS ? 0 : FLUSH_MS);
  }

  #releaseReady(s: HookState): void {
    for (const r of s.ready) {
      this.#held.delete(r.seq);
      this.#release.push(r.seq);
      s.nextDue = s.nextDue === null ? r.nextAttempt : Math.min(s.nextDue, r.nextAttempt);
    }
    s.ready = [];
  }

  /** When the next tick is needed for due rows (Infinity: none waits). */
  #earliest(now: number): number {
    let at = Infinity;
    for (const s of this.#states.values()) {
      if (s.gone || s.nextDue === null) continue;
      // Due but without room: a finishing POST ticks.
      if (s.nextDue <= now) continue;
      at = Math.min(at, s.nextDue);
    }
    return at;
  }

  /** One timer, for the earliest due row. */
  #arm(at: number): void {
    if (this.#closed || at === this.#timerAt) return;
    clearTimeout(this.#timer);
    this.#timerAt = at;
    if (at === Infinity) return;
    // Node's timers are capped at 2^31-1 ms (24.8 days); a wake-up that early just re-arms.
    this.#timer = setTimeout(() => {
      this.#timerAt = Infinity;
      this.#tick();
    }, Math.min(Math.max(0, at - Date.now()), 2 ** 31 - 1));
    this.#timer.unref();
  }

  #purge(webhookId: string): void {
    if (this.#purging.has(webhookId)) return;
    this.#purging.add(webhookId);
    void deleteInBatches((limit) => this.#store.purgeOutbox(webhookId, limit), PURGE_BATCH, () => this.#closed)
      .catch((e: unknown) => this.#log.error('webhook outbox purge failed', { webhook: webhookId, error: e }))
      .finally(() => this.#purging.delete(webhookId));
  }
}
