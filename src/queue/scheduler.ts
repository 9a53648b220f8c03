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
import type { QueuedMessage, SuppressedDsn } from '../spool/types.ts';
import type { DeliveryResult, RemoteTransport } from '../delivery/types.ts';
import type { MaildirTransport } from '../delivery/maildir.ts';
import type { Logger } from '../util/log.ts';

/** The part of a local transport the scheduler uses (a fake in unit tests). */
export type LocalTransport = Pick<MaildirTransport, 'deliver'>;

/**
 * What the scheduler reports for DSNs (the bouncer builds and queues them).
 * The handler may record on msg.state (a DSN it suppressed): the state is
 * written after notifying whenever the message stays queued.
 */
export interface Notice {
  kind: 'failed' | 'delayed' | 'delivered' | 'relayed';
  msg: QueuedMessage;
  recipients: { index: number; reply: string; remoteMta?: string | undefined }[];
  /** delayed: when we give up. */
  willRetryUntil?: number | undefined;
}

export interface SchedulerOptions {
  spool: Spool;
  maildir: LocalTransport;
  /** Local domains whose mail is dropped once queued (`delivery: discard`), instead of written to a Maildir. */
  discard?: ((domain: string) => boolean) | undefined;
  /** Absent: remote recipients stay queued until a transport exists. */
  remote?: RemoteTransport | undefined;
  /** Delays between attempts in ms; the last one repeats. */
  retrySchedule: number[];
  /** Give up on a message this long after acceptance (ms). */
  maxLifetime: number;
  /** Send one delay DSN once a message has waited this long (ms); 0 = never. */
  delayWarning?: number;
  /** Jobs in flight at once, in all. */
  concurrency?: number;
  /** Jobs in flight at once to one remote destination. */
  perDestination?: number;
  /** Called for every DSN-worthy outcome; errors are logged, never fatal. */
  notify?: (n: Notice) => Promise<void>;
  log: Logger;
  now?: () => number;
  random?: () => number;
}

/** Jitter spreads retries after a restart or an outage (±20%), so they do not all fire at once. */
export const RETRY_JITTER = 0.2;
/**
 * Messages a retry of everything moves per event-loop turn: starting a
 * round costs microseconds, 20,000 of them in one turn would stall every
 * session (and the control answer) for a noticeable time.
 */
export const RETRY_BATCH = 500;
/** Maildir writes in flight at once: the disk, not the network, is the limit. */
export const LOCAL_CONCURRENCY = 20;
const LOCAL = 'local';

interface Job {
  id: string;
  dest: string;
  domain: string;
  indices: number[];
  local: boolean;
}

interface Destination {
  key: string;
  limit: number;
  active: number;
  fresh: Job[];
  retry: Job[];
  /** Alternates fresh and retry jobs. */
  preferRetry: boolean;
}

interface Entry {
  msg: QueuedMessage;
  /** Jobs of the current round not yet finished. */
  running: number;
  /** Round outcome: indexes that reached a final state this round. */
  failed: { index: number; reply: string; remoteMta?: string | undefined }[];
  delivered: { index: number; reply: string; remoteMta?: string | undefined; relayed: boolean }[];
  deleted: boolean;
}

export interface QueueSummary {
  id: string;
  receivedAt: number;
  sender: string;
  size: number;
  recipients: { address: string; status: string; lastError: string | null }[];
  attempts: number;
  nextAttempt: number;
  held: boolean;
  active: boolean;
}

/** What `retry` did: messages now due, and held ones it left alone (a release lifts a hold). */
export interface RetryOutcome {
  scheduled: number;
  held: number;
}

export class Scheduler {
  readonly #o: SchedulerOptions & { concurrency: number; perDestination: number; now: () => number; random: () => number; delayWarning: number };
  readonly #entries = new Map<string, Entry>();
  readonly #dests = new Map<string, Destination>();
  /** Destinations with waiting jobs, served round-robin. */
  #ring: Destination[] = [];
  #rr = 0;
  #active = 0;
  #timer: NodeJS.Timeout | null = null;
  #timerAt = Infinity;
  #stopping = false;
  #idleWaiters: (() => void)[] = [];
  /** Batches of a retry of everything still to run. */
  #retrying = 0;
  #pending = new Set<Promise<unknown>>();

  constructor(opts: SchedulerOptions) {
    this.#o = { concurrency: 100, perDestination: 10, now: Date.now, random: Math.random, delayWarning: 0, ...opts };
  }

  get size(): number {
    return this.#entries.size;
  }

  get(id: string): QueuedMessage | undefined {
    return this.#entries.get(id)?.msg;
  }

  /** A freshly committed message (from intake) or one found at start. */
  add(msg: QueuedMessage): void {
    if (this.#stopping) return; // it is on disk; the next start picks it up
    const entry: Entry = { msg, running: 0, failed: [], delivered: [], deleted: false };
    this.#entries.set(msg.envelope.id, entry);
    this.#schedule(entry);
  }

  #schedule(entry: Entry): void {
    const { state } = entry.msg;
    if (entry.running > 0 || state.held || !this.#hasWork(entry.msg)) return;
    if (state.nextAttempt <= this.#o.now()) this.#startRound(entry);
    else this.#armTimer(state.nextAttempt);
  }

  #hasWork(msg: QueuedMessage): boolean {
    return msg.envelope.recipients.some((r, i) => msg.state.status[i] === 'pending' && (r.mailbox !== undefined || this.#o.remote !== undefined));
  }

  /** Split the message's pending recipients into jobs, one per destination. */
  #startRound(entry: Entry): void {
    const { envelope, state } = entry.msg;
    const groups = new Map<string, Job>();
    envelope.recipients.forEach((r, i) => {
      if (state.status[i] !== 'pending') return;
      let job: Job;
      if (r.mailbox) {
        job = groups.get(LOCAL) ?? { id: envelope.id, dest: LOCAL, domain: '', indices: [], local: true };
        groups.set(LOCAL, job);
      } else {
        if (!this.#o.remote) return;
        const domain = r.address.slice(r.address.lastIndexOf('@') + 1).toLowerCase();
        const key = `remote:${domain}`;
        job = groups.get(key) ?? { id: envelope.id, dest: this.#o.remote.destinationOf(domain), domain, indices: [], local: false };
        groups.set(key, job);
      }
      job.indices.push(i);
    });
    if (groups.size === 0) return;
    entry.running = groups.size;
    entry.failed = [];
    entry.delivered = [];
    for (const job of groups.values()) {
      const dest = this.#dest(job.dest, job.local);
      (state.attempts === 0 ? dest.fresh : dest.retry).push(job);
      if (dest.fresh.length + dest.retry.length === 1) this.#ring.push(dest);
    }
    this.#pump();
  }

  #dest(key: string, local: boolean): Destination {
    let d = this.#dests.get(key);
    if (!d) {
      d = { key, limit: local ? LOCAL_CONCURRENCY : this.#o.perDestination, active: 0, fresh: [], retry: [], preferRetry: false };
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
    let results: DeliveryResult[];
    /** Local jobs: how each recipient was delivered, for the log. */
    const localVia: ('maildir' | 'discard')[] = [];
    if (entry.deleted || state.held) {
      results = [];
    } else if (job.local) {
      results = [];
      for (const i of job.indices) {
        const r = envelope.recipients[i]!;
        if (this.#o.discard?.(r.mailbox!.domain)) {
          localVia.push('discard');
          results.push({ kind: 'ok', reply: '250 2.0.0 discarded' });
          continue;
        }
        localVia.push('maildir');
        results.push(
          await this.#o.maildir.deliver(
            { id: envelope.id, receivedAt: envelope.receivedAt, sender: envelope.sender, recovered: msg.recovered, open: () => this.#o.spool.openMessage(msg) },
            i,
            { ...r.mailbox!, address: r.address },
            r.folder,
          ),
        );
      }
    } else {
      results = await this.#o.remote!.deliver({ msg, domain: job.domain, indices: job.indices, open: () => this.#o.spool.openMessage(msg) });
    }
    results.forEach((result, k) => {
      const i = job.indices[k]!;
      const rcpt = envelope.recipients[i]!;
      state.lastError[i] = result.kind === 'ok' ? null : result.reply;
      if (result.kind === 'ok') {
        state.status[i] = 'delivered';
        entry.delivered.push({ index: i, reply: result.reply, remoteMta: result.remoteMta, relayed: !job.local && !result.dsnPassed });
      } else if (result.kind === 'permfail') {
        state.status[i] = 'failed';
        entry.failed.push({ index: i, reply: result.reply, remoteMta: result.remoteMta });
      }
      this.#o.log[result.kind === 'ok' ? 'info' : 'warn']('delivery', {
        id: envelope.id,
        to: rcpt.address,
        orig: rcpt.original !== rcpt.address ? rcpt.original : undefined,
        result: result.kind,
        reply: result.reply,
        relay: result.remoteMta ?? localVia[k],
        tls: result.kind === 'ok' ? result.tls : undefined,
        delay: (this.#o.now() - envelope.receivedAt) / 1000,
        attempt: state.attempts + 1,
      });
    });
    entry.running--;
    if (entry.running > 0) {
      // Other destinations of this message are still running: record progress
      // now so what was delivered is never delivered again after a crash.
      if (results.length > 0 && !entry.deleted) await this.#o.spool.writeState(envelope.id, state).catch((e: unknown) => this.#o.log.error('could not record delivery state', { id: envelope.id, error: e }));
      return;
    }
    try {
      await this.#endRound(entry);
    } catch (e) {
      // Never strand a message: log, and try the round again later.
      this.#o.log.error('could not finish a delivery round', { id: envelope.id, error: e });
      state.nextAttempt = this.#o.now() + this.retryDelay(Math.max(1, state.attempts));
      this.#schedule(entry);
    }
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
    state.attempts++;
    const pending = envelope.recipients.map((_, i) => i).filter((i) => state.status[i] === 'pending');
    const expired = now - envelope.receivedAt >= this.#o.maxLifetime;
    if (pending.length > 0 && expired && !state.held) {
      // RFC 3463 X.4.7: delivery time expired; the last error says why.
      for (const i of pending) {
        state.status[i] = 'failed';
        const last = state.lastError[i] ?? 'no delivery attempt succeeded';
        state.lastError[i] = `expired after ${formatAge(now - envelope.receivedAt)} in the queue; last error: ${last}`;
        entry.failed.push({ index: i, reply: `4.4.7 ${state.lastError[i]}` });
      }
    }
    if (entry.failed.length) await this.#notify({ kind: 'failed', msg, recipients: entry.failed });
    const success = entry.delivered.filter((d) => !d.relayed);
    const relayed = entry.delivered.filter((d) => d.relayed);
    if (success.length) await this.#notify({ kind: 'delivered', msg, recipients: success });
    if (relayed.length) await this.#notify({ kind: 'relayed', msg, recipients: relayed });
    entry.failed = [];
    entry.delivered = [];
    const still = envelope.recipients.map((_, i) => i).filter((i) => state.status[i] === 'pending');
    if (still.length === 0) {
      await this.#remove(id);
      return;
    }
    const giveUpAt = envelope.receivedAt + this.#o.maxLifetime;
    // The last retry happens at expiry, not a whole step after it.
    state.nextAttempt = Math.min(now + this.retryDelay(state.attempts), Math.max(giveUpAt, now + 1000));
    const warnAfter = this.#o.delayWarning;
    if (warnAfter > 0 && !state.warned && now - envelope.receivedAt >= warnAfter) {
      state.warned = true;
      await this.#notify({ kind: 'delayed', msg, recipients: still.map((i) => ({ index: i, reply: state.lastError[i] ?? '' })), willRetryUntil: giveUpAt });
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
    this.#entries.delete(id);
    await this.#o.spool.remove(id);
  }

  #armTimer(at: number): void {
    if (this.#stopping || at >= this.#timerAt) return;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timerAt = at;
    this.#timer = setTimeout(() => this.#onTimer(), Math.max(0, at - this.#o.now()));
    this.#timer.unref();
  }

  #onTimer(): void {
    this.#timer = null;
    this.#timerAt = Infinity;
    for (const entry of this.#entries.values()) this.#schedule(entry);
  }

  /** Delay before attempt n+1 (n ≥ 1): the schedule's n-th step, the last one repeating, with jitter. */
  retryDelay(attempts: number): number {
    const steps = this.#o.retrySchedule;
    const base = steps[Math.min(attempts, steps.length) - 1] ?? 60_000;
    return Math.round(base * (1 - RETRY_JITTER + 2 * RETRY_JITTER * this.#o.random()));
  }

  // ---- queue control (tern queue …) ----

  list(): QueueSummary[] {
    return [...this.#entries.values()].map((e) => summarize(e));
  }

  show(id: string): (QueueSummary & { envelope: QueuedMessage['envelope']; dsnSuppressed: SuppressedDsn[] }) | null {
    const e = this.#entries.get(id);
    return e ? { ...summarize(e), envelope: e.msg.envelope, dsnSuppressed: e.msg.state.dsnSuppressed ?? [] } : null;
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
    e.msg.state.nextAttempt = this.#o.now();
    this.#schedule(e);
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
    e.msg.state.held = true;
    await this.#o.spool.writeState(id, e.msg.state);
    return true;
  }

  async release(id: string): Promise<boolean> {
    const e = this.#entries.get(id);
    if (!e) return false;
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
    return this.#active === 0 && this.#ring.length === 0 && this.#retrying === 0;
  }

  #wakeIdle(): void {
    if (this.#isIdle()) for (const w of this.#idleWaiters.splice(0)) w();
  }

  /** Stop starting jobs; wait for the ones in flight (their outcome is then on disk). */
  async stop(): Promise<void> {
    this.#stopping = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#ring = [];
    for (const d of this.#dests.values()) {
      d.fresh = [];
      d.retry = [];
    }
    await Promise.allSettled([...this.#pending]);
  }
}

function summarize(e: Entry): QueueSummary {
  const { envelope, state, size } = e.msg;
  return {
    id: envelope.id,
    receivedAt: envelope.receivedAt,
    sender: envelope.sender,
    size,
    recipients: envelope.recipients.map((r, i) => ({ address: r.address, status: state.status[i]!, lastError: state.lastError[i] ?? null })),
    attempts: state.attempts,
    nextAttempt: state.nextAttempt,
    held: !!state.held,
    active: e.running > 0,
  };
}

function formatAge(ms: number): string {
  const h = ms / 3_600_000;
  return h >= 48 ? `${Math.round(h / 24)} days` : h >= 1 ? `${Math.round(h)} hours` : `${Math.round(ms / 60_000)} minutes`;
}
