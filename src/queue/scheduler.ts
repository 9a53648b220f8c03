// The scheduler: decides what to try now. It keeps an in-memory index of
// the spool (rebuilt from disk at start), runs deliveries with a concurrency
// limit, and turns each recipient's result into done / retry later / failed.
// Transports only report; retry timing, expiry and removal happen here.

import type { Spool } from '../spool/spool.ts';
import type { QueuedMessage } from '../spool/types.ts';
import type { DeliveryResult } from '../delivery/types.ts';
import type { MaildirTransport } from '../delivery/maildir.ts';

/** The part of a local transport the scheduler uses (a fake in unit tests). */
export type LocalTransport = Pick<MaildirTransport, 'deliver'>;
import type { Logger } from '../util/log.ts';

export interface SchedulerOptions {
  spool: Spool;
  maildir: LocalTransport;
  /** Delays between attempts in ms; the last one repeats. */
  retrySchedule: number[];
  /** Give up on a message this long after acceptance (ms). */
  maxLifetime: number;
  /** Deliveries in flight at once. */
  concurrency?: number;
  log: Logger;
  now?: () => number;
  random?: () => number;
}

/** Jitter spreads retries after a restart or an outage (±20%), so they do not all fire at once. */
export const RETRY_JITTER = 0.2;

export class Scheduler {
  readonly #o: Required<Pick<SchedulerOptions, 'concurrency' | 'now' | 'random'>> & SchedulerOptions;
  readonly #messages = new Map<string, QueuedMessage>();
  readonly #ready: string[] = [];
  readonly #queued = new Set<string>();
  #active = 0;
  #timer: NodeJS.Timeout | null = null;
  #timerAt = Infinity;
  #stopping = false;
  #idleWaiters: (() => void)[] = [];

  constructor(opts: SchedulerOptions) {
    this.#o = { concurrency: 20, now: Date.now, random: Math.random, ...opts };
  }

  get size(): number {
    return this.#messages.size;
  }

  get(id: string): QueuedMessage | undefined {
    return this.#messages.get(id);
  }

  /** A freshly committed message (from intake) or one found at start. */
  add(msg: QueuedMessage): void {
    if (this.#stopping) return; // on disk; the next start picks it up
    this.#messages.set(msg.envelope.id, msg);
    this.#schedule(msg);
  }

  #schedule(msg: QueuedMessage): void {
    if (msg.state.held || !this.#hasWork(msg)) return;
    const at = msg.state.nextAttempt;
    if (at <= this.#o.now()) this.#enqueue(msg.envelope.id);
    else this.#armTimer(at);
  }

  /** Work we can do now: pending recipients that have a transport (remote delivery lands with the outbound issue). */
  #hasWork(msg: QueuedMessage): boolean {
    return msg.envelope.recipients.some((r, i) => msg.state.status[i] === 'pending' && r.mailbox !== undefined);
  }

  #enqueue(id: string): void {
    if (this.#queued.has(id)) return;
    this.#queued.add(id);
    this.#ready.push(id);
    this.#pump();
  }

  #armTimer(at: number): void {
    if (at >= this.#timerAt) return;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timerAt = at;
    this.#timer = setTimeout(() => this.#onTimer(), Math.max(0, at - this.#o.now()));
    this.#timer.unref();
  }

  #onTimer(): void {
    this.#timer = null;
    this.#timerAt = Infinity;
    const now = this.#o.now();
    for (const msg of this.#messages.values()) {
      if (msg.state.held || this.#queued.has(msg.envelope.id) || !this.#hasWork(msg)) continue;
      if (msg.state.nextAttempt <= now) this.#enqueue(msg.envelope.id);
      else this.#armTimer(msg.state.nextAttempt);
    }
  }

  #pump(): void {
    while (!this.#stopping && this.#active < this.#o.concurrency && this.#ready.length > 0) {
      const id = this.#ready.shift()!;
      const msg = this.#messages.get(id);
      if (!msg) {
        this.#queued.delete(id);
        continue;
      }
      this.#active++;
      this.#attempt(msg)
        .catch((e: unknown) => this.#o.log.error('delivery attempt failed', { id, error: e }))
        .finally(() => {
          this.#active--;
          this.#queued.delete(id);
          if (this.#active === 0 && this.#ready.length === 0) for (const w of this.#idleWaiters.splice(0)) w();
          this.#pump();
        });
    }
  }

  async #attempt(msg: QueuedMessage): Promise<void> {
    const { envelope, state } = msg;
    const id = envelope.id;
    const now = this.#o.now();
    let tempfailed = false;
    let changed = false;
    const expired = now - envelope.receivedAt > this.#o.maxLifetime;
    for (let i = 0; i < envelope.recipients.length; i++) {
      const rcpt = envelope.recipients[i]!;
      if (state.status[i] !== 'pending' || !rcpt.mailbox) continue;
      const result: DeliveryResult = expired
        ? { kind: 'permfail', reply: `expired after ${Math.round((now - envelope.receivedAt) / 3600000)}h in the queue: ${state.lastError[i] ?? ''}` }
        : await this.#o.maildir.deliver(
            { id, receivedAt: envelope.receivedAt, sender: envelope.sender, recovered: msg.recovered, open: () => this.#o.spool.openMessage(msg) },
            i,
            { ...rcpt.mailbox, address: rcpt.address },
          );
      changed = true;
      state.lastError[i] = result.kind === 'ok' ? null : result.reply;
      if (result.kind === 'ok') state.status[i] = 'delivered';
      else if (result.kind === 'permfail') state.status[i] = 'failed';
      else tempfailed = true;
      this.#o.log[result.kind === 'ok' ? 'info' : 'warn']('delivery', {
        id,
        to: rcpt.address,
        orig: rcpt.original,
        result: result.kind,
        reply: result.reply,
        delay: (this.#o.now() - envelope.receivedAt) / 1000,
        attempt: state.attempts + 1,
      });
      // A bounce (RFC 3464) for permanent failures arrives with the outbound issue.
    }
    if (!changed) return;
    state.attempts++;
    if (state.status.every((s) => s !== 'pending')) {
      await this.#o.spool.remove(id);
      this.#messages.delete(id);
      return;
    }
    if (tempfailed) state.nextAttempt = this.#o.now() + this.retryDelay(state.attempts);
    // Record progress so delivered recipients are never tried again after a restart.
    await this.#o.spool.writeState(id, state);
    this.#schedule(msg);
  }

  /** Delay before attempt n+1 (n ≥ 1): the schedule's n-th step, the last one repeating, with jitter. */
  retryDelay(attempts: number): number {
    const steps = this.#o.retrySchedule;
    const base = steps[Math.min(attempts, steps.length) - 1] ?? 60_000;
    return Math.round(base * (1 - RETRY_JITTER + 2 * RETRY_JITTER * this.#o.random()));
  }

  /** Resolves when nothing is running or ready (tests, shutdown). */
  idle(): Promise<void> {
    if (this.#active === 0 && this.#ready.length === 0) return Promise.resolve();
    return new Promise((res) => this.#idleWaiters.push(res));
  }

  /** Stop starting attempts; wait for the ones in flight (their outcome is then on disk). */
  async stop(): Promise<void> {
    this.#stopping = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#ready.length = 0;
    if (this.#active > 0) await new Promise<void>((res) => this.#idleWaiters.push(res));
  }
}
