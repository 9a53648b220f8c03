// The scheduler: decides what to try now. It keeps an in-memory index of
// the spool (rebuilt from disk at start) and turns every due message into
// delivery jobs, one per destination (all local recipients; or all remote
// recipients of one domain, so one SMTP transaction carries them together).
//
// Jobs wait in per-destination queues, served round-robin, each destination
// under its own concurrency limit and everything under a global one. Inside
// a destination, new mail and retries alternate (Postfix qmgr's fairness
// between the incoming and deferred queues), so a backlog of deferred mail
// never blocks fresh mail. Transports only report; retry times (with
// jitter), expiry, delay warnings and bounces are decided here.

import type { Spool } from '../spool/spool.ts';
import type { DeliveryReply, QueuedMessage, RecipientStatus, SuppressedDsn } from '../spool/types.ts';
import type { DeliveryResult, Relay, Router, Transport } from '../delivery/types.ts';
import type { EventStream } from '../events/events.ts';
import { replyLine } from '../delivery/reply.ts';
import type { Logger } from '../util/log.ts';
import { TimeIndex } from './time-index.ts';
import { Fifo } from './fifo.ts';

/**
 * What the scheduler reports for DSNs (the bouncer builds and queues them).
 * The handler may record on msg.state (a DSN it suppressed): the state is
 * written after notifying whenever the message stays queued.
 */
export interface Notice {
  kind: 'failed' | 'delayed' | 'delivered' | 'relayed';
  msg: QueuedMessage;
  recipients: NoticeRecipient[];
  /** delayed: when we give up. */
  willRetryUntil?: number | undefined;
}

export interface NoticeRecipient {
  index: number;
  /** Its last reply (delayed: null when it was never tried). */
  reply: DeliveryReply | null;
  /** The host that gave the reply (Remote-MTA); null for our own replies, or when not known (after a restart). */
  relay: Relay | null;
}

export interface SchedulerOptions {
  spool: Spool;
  /** Where each recipient goes (src/delivery/router.ts); one it cannot route stays queued. */
  router: Router;
  /** Every job result (delivered, deferred, bounced) and every expiry is an event. */
  events?: EventStream | undefined;
  /** Delays between attempts in ms; the last one repeats. */
  retrySchedule: number[];
  /** Give up on a message this long after acceptance (ms). */
  maxLifetime: number;
  /** Send one delay DSN once a message has waited this long (ms); 0 = never. */
  delayWarning?: number;
  /** Jobs in flight at once, in all. */
  concurrency?: number;
  /** Called for every DSN-worthy outcome; errors are logged, never fatal. */
  notify?: (n: Notice) => Promise<void>;
  /** The suppression list: a remote recipient on it is not sent to. Asked before every attempt. */
  suppressions?: SuppressionCheck | undefined;
  log: Logger;
  now?: () => number;
  random?: () => number;
}

/** What the scheduler asks of the suppression list (src/suppress/list.ts): synchronous, and cheap when the list is empty. */
export interface SuppressionCheck {
  lookup(address: string): { reason: string } | null;
}

/** Jitter spreads retries after a restart or an outage (±20%), so they do not all fire at once. */
export const RETRY_JITTER = 0.2;
/**
 * Messages a retry of everything moves per event-loop turn: starting a
 * round costs microseconds, 20,000 of them in one turn would stall every
 * session (and the control answer) for a noticeable time.
 */
export const RETRY_BATCH = 500;
/**
 * Due messages one timer wake-up starts; more due than this (a restart
 * after an outage) continue on the next turn, so sessions are served between.
 */
export const WAKE_BATCH = 500;
/** setTimeout fires at once beyond 2^31-1 ms; a far wake-up is re-armed on the way. */
const MAX_TIMER_DELAY = 2 ** 31 - 1;
interface Job {
  id: string;
  dest: string;
  indices: number[];
  transport: Transport;
}

interface Destination {
  key: string;
  limit: number;
  active: number;
  /** Fifo, not an array: a retry of 100,000 queues that many jobs here, and Array#shift would copy them all each time. */
  fresh: Fifo<Job>;
  retry: Fifo<Job>;
  /** Alternates fresh and retry jobs. */
  preferRetry: boolean;
}

interface Entry {
  msg: QueuedMessage;
  /** Jobs of the current round not yet finished. */
  running: number;
  /** Round outcome: indexes that reached a final state this round, and those deferred. */
  failed: NoticeRecipient[];
  delivered: (NoticeRecipient & { relayed: boolean })[];
  deferred: NoticeRecipient[];
  deleted: boolean;
  /**
   * Set when `tern queue retry` brought the round forward: the automatic
   * attempt time it replaced. Such a round does not advance the backoff,
   * and a tempfail returns to this time (issue 18).
   */
  manualFrom: number | null;
}

/**
 * One message as `tern queue list --json` prints it (the README): times
 * are ISO 8601; a recipient's status is queued (not tried yet), deferred,
 * delivered, bounced or expired (failed with a 4xx: given up at
 * queue.maxLifetime); the message's state is queued, deferred, active (an
 * attempt in flight) or held. `attempts` and `nextAttempt` of the message
 * are its delivery rounds and when the next one is due.
 */
export interface QueueSummary {
  id: string;
  from: string;
  recipients: { address: string; status: RecipientState; attempts: number; nextAttempt: string | null; lastReply: DeliveryReply | null }[];
  size: number;
  createdAt: string;
  state: 'queued' | 'deferred' | 'active' | 'held';
  attempts: number;
  nextAttempt: string;
}

export type RecipientState = 'queued' | 'deferred' | 'delivered' | 'bounced' | 'expired';

/** What `retry` did: messages now due, and held ones it left alone (a release lifts a hold). */
export interface RetryOutcome {
  scheduled: number;
  held: number;
}

export class Scheduler {
  readonly #o: SchedulerOptions & { concurrency: number; now: () => number; random: () => number; delayWarning: number };
  readonly #entries = new Map<string, Entry>();
  readonly #dests = new Map<string, Destination>();
  /** Destinations with waiting jobs, served round-robin. */
  #ring: Destination[] = [];
  #rr = 0;
  #active = 0;
  /**
   * Entries waiting for their next attempt, earliest first: exactly those
   * not running, not held, with work left and a future nextAttempt. One
   * timer is armed for the earliest; nothing scans #entries on a timer.
   */
  readonly #waiting = new TimeIndex<Entry>();
  #timer: NodeJS.Timeout | null = null;
  #timerAt = Infinity;
  /** A wake-up found more due than one batch and continues next turn (not idle yet). */
  #waking = false;
  #stopping = false;
  #idleWaiters: (() => void)[] = [];
  /** Batches of a retry of everything still to run. */
  #retrying = 0;
  #pending = new Set<Promise<unknown>>();
  /** Entries with state.held: kept as holds and releases happen, so `counts` never walks the queue. */
  #held = 0;

  constructor(opts: SchedulerOptions) {
    this.#o = { concurrency: 100, now: Date.now, random: Math.random, delayWarning: 0, ...opts };
  }

  get size(): number {
    return this.#entries.size;
  }

  /** O(1), for the tern_queue_messages gauge (src/metrics/queue.ts): all, waiting for a later attempt, held. */
  get counts(): { total: number; waiting: number; held: number } {
    return { total: this.#entries.size, waiting: this.#waiting.size, held: this.#held };
  }

  /** O(1), for the dashboard's queue figures (src/dashboard/queue.ts): delivery jobs running now (one per destination of a message). */
  get inFlight(): number {
    return this.#active;
  }

  get(id: string): QueuedMessage | undefined {
    return this.#entries.get(id)?.msg;
  }

  /** A freshly committed message (from intake) or one found at start. */
  add(msg: QueuedMessage): void {
    if (this.#stopping) return; // it is on disk; the next start picks it up
    const entry: Entry = { msg, running: 0, failed: [], delivered: [], deferred: [], deleted: false, manualFrom: null };
    this.#entries.set(msg.envelope.id, entry);
    if (msg.state.held) this.#held++; // held before a restart
    this.#schedule(entry);
  }

  /** Start the entry's round if it is due, else (re)file it in the time index under its next attempt. */
  #schedule(entry: Entry): void {
    const { state } = entry.msg;
    if (entry.running > 0 || state.held || entry.deleted || !this.#hasWork(entry.msg)) {
      this.#waiting.delete(entry);
      return;
    }
    if (state.nextAttempt <= this.#o.now()) {
      this.#waiting.delete(entry);
      this.#startRound(entry);
    } else {
      this.#waiting.set(entry, state.nextAttempt);
      this.#armTimer();
    }
  }

  #hasWork(msg: QueuedMessage): boolean {
    return msg.envelope.recipients.some((_, i) => msg.state.status[i] === 'pending' && this.#o.router.route(msg.envelope, i) !== null);
  }

  /** Split the message's pending recipients into jobs, one per destination. */
  #startRound(entry: Entry): void {
    const { envelope, state } = entry.msg;
    const groups = new Map<string, { job: Job; limit: number }>();
    for (let i = 0; i < envelope.recipients.length; i++) {
      if (state.status[i] !== 'pending') continue;
      const to = this.#o.router.route(envelope, i);
      if (!to) continue; // no way to deliver it yet: it stays queued
      let group = groups.get(to.key);
      if (!group) {
        group = { job: { id: envelope.id, dest: to.key, indices: [], transport: to.transport }, limit: to.limit };
        groups.set(to.key, group);
      }
      group.job.indices.push(i);
    }
    if (groups.size === 0) return;
    entry.running = groups.size;
    entry.failed = [];
    entry.delivered = [];
    entry.deferred = [];
    for (const { job, limit } of groups.values()) {
      const dest = this.#dest(job.dest, limit);
      (state.attempts === 0 ? dest.fresh : dest.retry).push(job);
      if (dest.fresh.length + dest.retry.length === 1) this.#ring.push(dest);
    }
    this.#pump();
  }

  #dest(key: string, limit: number): Destination {
    let d = this.#dests.get(key);
    if (!d) {
      d = { key, limit, active: 0, fresh: new Fifo(), retry: new Fifo(), preferRetry: false };
      this.#dests.set(key, d);
    }
    return d;
  }

  #pump(): void {
    while (!this.#stopping && this.#active < this.#o.concurrency && this.#ring.length > 0) {
      // Next destination (round-robin) that has room.
      let dest: Destination | undefined;
      for (let n = 0; n < this.#ring.length; n++) {
        const d = this.#ring[(this.#rr + n) % this.#ring.length]!;
        if (d.active < d.limit) {
          dest = d;
          this.#rr = (this.#rr + n + 1) % Math.max(1, this.#ring.length);
          break;
        }
      }
      if (!dest) return;
      const takeRetry = dest.retry.length > 0 && (dest.preferRetry || dest.fresh.length === 0);
      const job = (takeRetry ? dest.retry : dest.fresh).shift()!;
      dest.preferRetry = !takeRetry;
      if (dest.fresh.length + dest.retry.length === 0) this.#ring = this.#ring.filter((d) => d !== dest);
      dest.active++;
      this.#active++;
      const p = this.#run(job)
        .catch((e: unknown) => this.#o.log.error('delivery job failed', { id: job.id, error: e }))
        .finally(() => {
          this.#pending.delete(p);
          dest.active--;
          this.#active--;
          this.#wakeIdle();
          this.#pump();
        });
      this.#pending.add(p);
    }
  }

  async #run(job: Job): Promise<void> {
    const entry = this.#entries.get(job.id);
    if (!entry) return;
    const { msg } = entry;
    const { envelope, state } = msg;
    const attempt = state.attempts + 1;
    const skip = entry.deleted || state.held;
    // Suppressed recipients are settled before the transport sees the job: they are never sent to.
    const indices = skip ? job.indices : this.#withoutSuppressed(entry, job.indices, attempt);
    const results: DeliveryResult[] = skip || indices.length === 0 ? [] : await job.transport.deliver({ msg, indices, open: () => this.#o.spool.openMessage(msg) });
    const events = this.#o.events;
    for (let k = 0; k < results.length; k++) {
      const result = results[k]!;
      const i = indices[k]!;
      state.lastReply[i] = result.reply;
      if (result.status === 'ok') {
        state.status[i] = 'delivered';
        // RFC 3461 §5.2.1: a next hop that took our DSN parameters reports success itself.
        if (result.successDsn !== 'none') entry.delivered.push({ index: i, reply: result.reply, relay: result.relay, relayed: result.successDsn === 'relayed' });
      } else if (result.status === 'permfail') {
        state.status[i] = 'failed';
        entry.failed.push({ index: i, reply: result.reply, relay: result.relay });
      } else {
        entry.deferred.push({ index: i, reply: result.reply, relay: result.relay });
      }
      events?.emit(result.status === 'ok' ? 'delivered' : result.status === 'permfail' ? 'bounced' : 'deferred', msg, i, attempt, result, job.transport.name);
    }
    entry.running--;
    if (entry.running > 0) {
      // Other destinations of this message are still running: record progress
      // now so what was delivered is never delivered again after a crash.
      if ((results.length > 0 || indices.length < job.indices.length) && !entry.deleted) await this.#o.spool.writeState(envelope.id, state).catch((e: unknown) => this.#o.log.error('could not record delivery state', { id: envelope.id, error: e }));
      return;
    }
    try {
      await this.#endRound(entry);
    } catch (e) {
      // Never strand a message: log, and try the round again later.
      this.#o.log.error('could not finish a delivery round', { id: envelope.id, error: e });
      state.nextAttempt = this.#o.now() + this.retryDelay(Math.max(1, automaticAttempts(state)));
      this.#schedule(entry);
    }
  }

  /**
   * Settles the suppressed recipients among `indices` and returns the
   * others. Local mailboxes are never suppressed (docs/suppressions.md). A
   * suppressed recipient fails with our own 550 5.7.1 (RFC 3463 §3.8: not
   * authorized) and a 'suppressed' event, not 'bounced': nothing was tried.
   * A DSN follows only when the recipient's NOTIFY asked for failures
   * explicitly (RFC 3461 §4.1), since the default (no NOTIFY: API mail,
   * most clients) would mail the sender about our own decision each time.
   */
  #withoutSuppressed(entry: Entry, indices: number[], attempt: number): number[] {
    const list = this.#o.suppressions;
    if (!list) return indices;
    const { msg } = entry;
    const { recipients } = msg.envelope;
    let kept: number[] | null = null;
    for (let k = 0; k < indices.length; k++) {
      const i = indices[k]!;
      const r = recipients[i]!;
      const hit = r.mailbox ? null : list.lookup(r.address);
      if (!hit) {
        kept?.push(i);
        continue;
      }
      kept ??= indices.slice(0, k);
      const reply: DeliveryReply = { code: 550, enhanced: '5.7.1', text: `Recipient is on the suppression list (${hit.reason})` };
      msg.state.status[i] = 'failed';
      msg.state.lastReply[i] = reply;
      if (r.notify?.includes('FAILURE')) entry.failed.push({ index: i, reply, relay: null });
      this.#o.events?.emit('suppressed', msg, i, attempt, { reply, relay: null, tls: null });
    }
    return kept ?? indices;
  }

  /** Every job of the round is done: bounce, finish, or set the next attempt. */
  async #endRound(entry: Entry): Promise<void> {
    const { msg } = entry;
    const { envelope, state } = msg;
    const id = envelope.id;
    if (entry.deleted) {
      await this.#remove(id);
      return;
    }
    const now = this.#o.now();
    // Every round counts for `tern queue show` and the events; a manual one is also counted apart, so the backoff can leave it out.
    const manualFrom = entry.manualFrom;
    entry.manualFrom = null;
    state.attempts++;
    if (manualFrom !== null) state.manualAttempts = (state.manualAttempts ?? 0) + 1;
    const pending = envelope.recipients.map((_, i) => i).filter((i) => state.status[i] === 'pending');
    const expired = now - envelope.receivedAt >= this.#o.maxLifetime;
    if (pending.length > 0 && expired && !state.held) {
      // RFC 3463 X.4.7 (delivery time expired), in a reply of ours whose text says what the last one was.
      for (const i of pending) {
        state.status[i] = 'failed';
        const last = state.lastReply[i];
        const expiry: DeliveryReply = {
          code: last && last.code >= 400 && last.code < 500 ? last.code : 451,
          enhanced: '4.4.7',
          text: `expired after ${formatAge(now - envelope.receivedAt)} in the queue; ${last ? `last reply: ${replyLine(last)}` : 'no delivery attempt succeeded'}`,
        };
        state.lastReply[i] = expiry;
        entry.failed.push({ index: i, reply: expiry, relay: null });
        this.#o.events?.emit('expired', msg, i, state.attempts, { reply: expiry, relay: null, tls: null });
      }
    }
    if (entry.failed.length) await this.#notify({ kind: 'failed', msg, recipients: entry.failed });
    const success = entry.delivered.filter((d) => !d.relayed);
    const relayed = entry.delivered.filter((d) => d.relayed);
    if (success.length) await this.#notify({ kind: 'delivered', msg, recipients: success });
    if (relayed.length) await this.#notify({ kind: 'relayed', msg, recipients: relayed });
    const deferred = entry.deferred;
    entry.failed = [];
    entry.delivered = [];
    entry.deferred = [];
    const still = envelope.recipients.map((_, i) => i).filter((i) => state.status[i] === 'pending');
    if (still.length === 0) {
      await this.#remove(id);
      return;
    }
    const giveUpAt = envelope.receivedAt + this.#o.maxLifetime;
    // After a manual retry, the automatic attempt it brought forward stays where it was (when still ahead).
    const next = manualFrom !== null && manualFrom > now ? manualFrom : now + this.retryDelay(Math.max(1, automaticAttempts(state)));
    // The last retry happens at expiry, not a whole step after it.
    state.nextAttempt = Math.min(next, Math.max(giveUpAt, now + 1000));
    const warnAfter = this.#o.delayWarning;
    if (warnAfter > 0 && !state.warned && now - envelope.receivedAt >= warnAfter) {
      state.warned = true;
      const relays = new Map(deferred.map((d) => [d.index, d.relay]));
      await this.#notify({ kind: 'delayed', msg, recipients: still.map((i) => ({ index: i, reply: state.lastReply[i] ?? null, relay: relays.get(i) ?? null })), willRetryUntil: giveUpAt });
    }
    await this.#o.spool.writeState(id, state);
    this.#schedule(entry);
  }

  async #notify(n: Notice): Promise<void> {
    if (!this.#o.notify) return;
    try {
      await this.#o.notify(n);
    } catch (e) {
      this.#o.log.error('could not queue a DSN', { id: n.msg.envelope.id, kind: n.kind, error: e });
    }
  }

  async #remove(id: string): Promise<void> {
    if (this.#entries.get(id)?.msg.state.held) this.#held--;
    this.#entries.delete(id);
    await this.#o.spool.remove(id);
  }

  /**
   * One timer, for the earliest entry of the index, re-armed only when that
   * moves earlier. An entry taken out (held, deleted, retried now) leaves
   * the timer where it was: it fires early, finds nothing due, and re-arms.
   */
  #armTimer(): void {
    const at = this.#waiting.peekTime();
    if (this.#stopping || at >= this.#timerAt) return;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timerAt = at;
    this.#timer = setTimeout(() => this.#onTimer(), Math.min(MAX_TIMER_DELAY, Math.max(0, at - this.#o.now())));
    this.#timer.unref();
  }

  /** Start what is due, taken from the front of the index: O(due · log n), whatever the queue's size. */
  #onTimer(): void {
    this.#timer = null;
    this.#timerAt = Infinity;
    const continued = this.#waking;
    this.#waking = false;
    if (this.#stopping) return;
    const now = this.#o.now();
    for (let n = 0; n < WAKE_BATCH; n++) {
      const entry = this.#waiting.popDue(now);
      if (!entry) {
        this.#armTimer();
        if (continued) this.#wakeIdle();
        return;
      }
      // Checks it again (held, deleted, nothing left to do) before starting.
      if (this.#entries.get(entry.msg.envelope.id) === entry) this.#schedule(entry);
    }
    // More due than one batch: the rest on a later turn of the event loop.
    this.#waking = true;
    this.#timerAt = now;
    this.#timer = setTimeout(() => this.#onTimer(), 0);
    this.#timer.unref();
  }

  /** Delay before attempt n+1 (n ≥ 1): the schedule's n-th step, the last one repeating, with jitter. */
  retryDelay(attempts: number): number {
    const steps = this.#o.retrySchedule;
    const base = steps[Math.min(attempts, steps.length) - 1] ?? 60_000;
    return Math.round(base * (1 - RETRY_JITTER + 2 * RETRY_JITTER * this.#o.random()));
  }

  // ---- queue control (tern queue …) ----

  list(): QueueSummary[] {
    return [...this.listing()];
  }

  /**
   * The queue as list() has it, summarized as it is consumed: the control
   * socket takes a slice per turn of the event loop, so listing 100,000
   * messages never stalls the sessions for the whole of it. A message that
   * leaves the queue before its turn is left out; each is summarized as it
   * is at that moment (as a walk over Postfix's queue directories would).
   */
  *listing(): Generator<QueueSummary> {
    for (const e of [...this.#entries.values()]) if (this.#entries.get(e.msg.envelope.id) === e) yield summarize(e);
  }

  show(id: string): (QueueSummary & { manualAttempts: number; envelope: QueuedMessage['envelope']; dsnSuppressed: SuppressedDsn[] }) | null {
    const e = this.#entries.get(id);
    return e ? { ...summarize(e), manualAttempts: e.msg.state.manualAttempts ?? 0, envelope: e.msg.envelope, dsnSuppressed: e.msg.state.dsnSuppressed ?? [] } : null;
  }

  /**
   * Try now: one message (null when there is none by that id), or all.
   * Answers at once with what will happen; "all" then works through the
   * queue in batches between turns of the event loop, so a queue of 100k
   * neither delays the answer to `tern queue retry --all` nor starves the
   * SMTP sessions. Held messages stay held: only a release lifts that. The
   * earlier time is not written to disk: the attempt records its own
   * outcome, and a crash before it merely leaves the old retry time.
   */
  retry(id?: string): RetryOutcome | null {
    if (id !== undefined) {
      const e = this.#entries.get(id);
      if (!e) return null;
      if (e.msg.state.held) return { scheduled: 0, held: 1 };
      this.#retryNow(e);
      return { scheduled: 1, held: 0 };
    }
    const due: Entry[] = [];
    let held = 0;
    for (const e of this.#entries.values()) {
      if (e.msg.state.held) held++;
      else due.push(e);
    }
    this.#retrying++;
    setImmediate(() => this.#retryBatch(due, 0));
    return { scheduled: due.length, held };
  }

  #retryNow(e: Entry): void {
    const { state } = e.msg;
    const now = this.#o.now();
    // Only a round this retry brings forward is manual; one already due (or running) is the schedule's own.
    const broughtForward = e.running === 0 && state.nextAttempt > now ? state.nextAttempt : null;
    state.nextAttempt = now;
    this.#schedule(e);
    if (e.running > 0 && broughtForward !== null) e.manualFrom = broughtForward;
  }

  #retryBatch(entries: Entry[], from: number): void {
    this.#retrying--;
    const end = Math.min(entries.length, from + RETRY_BATCH);
    for (let i = from; i < end && !this.#stopping; i++) {
      const e = entries[i]!;
      // Deleted or held since the answer: leave it.
      if (this.#entries.get(e.msg.envelope.id) === e && !e.msg.state.held) this.#retryNow(e);
    }
    if (end < entries.length && !this.#stopping) {
      this.#retrying++;
      setImmediate(() => this.#retryBatch(entries, end));
    } else {
      this.#wakeIdle();
    }
  }

  async hold(id: string): Promise<boolean> {
    const e = this.#entries.get(id);
    if (!e) return false;
    if (!e.msg.state.held) this.#held++;
    e.msg.state.held = true;
    this.#waiting.delete(e);
    await this.#o.spool.writeState(id, e.msg.state);
    return true;
  }

  async release(id: string): Promise<boolean> {
    const e = this.#entries.get(id);
    if (!e) return false;
    if (e.msg.state.held) this.#held--;
    e.msg.state.held = false;
    e.msg.state.nextAttempt = this.#o.now();
    await this.#o.spool.writeState(id, e.msg.state);
    this.#schedule(e);
    return true;
  }

  /** Remove without a bounce (the admin's decision). A delivery in flight finishes first. */
  async delete(id: string): Promise<boolean> {
    const e = this.#entries.get(id);
    if (!e) return false;
    this.#waiting.delete(e);
    if (e.running > 0) {
      e.deleted = true;
      return true;
    }
    await this.#remove(id);
    return true;
  }

  /** Resolves when nothing is running or waiting (tests, shutdown). */
  idle(): Promise<void> {
    if (this.#isIdle()) return Promise.resolve();
    return new Promise((res) => this.#idleWaiters.push(res));
  }

  #isIdle(): boolean {
    return this.#active === 0 && this.#ring.length === 0 && this.#retrying === 0 && !this.#waking;
  }

  #wakeIdle(): void {
    if (this.#isIdle()) for (const w of this.#idleWaiters.splice(0)) w();
  }

  /** Stop starting jobs; wait for the ones in flight (their outcome is then on disk). */
  async stop(): Promise<void> {
    this.#stopping = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    this.#waking = false;
    this.#waiting.clear();
    this.#ring = [];
    for (const d of this.#dests.values()) {
      d.fresh = new Fifo();
      d.retry = new Fifo();
    }
    await Promise.allSettled([...this.#pending]);
  }
}

function summarize(e: Entry): QueueSummary {
  const { envelope, state, size } = e.msg;
  const nextAttempt = new Date(state.nextAttempt).toISOString();
  return {
    id: envelope.id,
    from: envelope.sender,
    recipients: envelope.recipients.map((r, i) => {
      const status = recipientState(state.status[i]!, state.attempts, state.lastReply[i] ?? null);
      const waiting = status === 'queued' || status === 'deferred';
      return { address: r.address, status, attempts: state.attempts, nextAttempt: waiting && !state.held ? nextAttempt : null, lastReply: state.lastReply[i] ?? null };
    }),
    size,
    createdAt: new Date(envelope.receivedAt).toISOString(),
    state: state.held ? 'held' : e.running > 0 ? 'active' : state.attempts > 0 ? 'deferred' : 'queued',
    attempts: state.attempts,
    nextAttempt,
  };
}

/** Rounds the schedule started itself: what the backoff steps by (manual retries left out). */
function automaticAttempts(state: QueuedMessage['state']): number {
  return state.attempts - (state.manualAttempts ?? 0);
}

/** A failed recipient whose last reply is a 4xx was given up at expiry (the 4.4.7 reply of #endRound); a 5xx bounced. */
function recipientState(status: RecipientStatus, attempts: number, last: DeliveryReply | null): RecipientState {
  if (status === 'delivered') return 'delivered';
  if (status === 'failed') return last && last.code < 500 ? 'expired' : 'bounced';
  return attempts > 0 ? 'deferred' : 'queued';
}

function formatAge(ms: number): string {
  const h = ms / 3_600_000;
  return h >= 48 ? `${Math.round(h / 24)} days` : h >= 1 ? `${Math.round(h)} hours` : `${Math.round(ms / 60_000)} minutes`;
}
