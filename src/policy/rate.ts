// Per-client rate limits on the MX port, like Postfix's anvil
// (smtpd_client_connection_rate_limit, smtpd_client_message_rate_limit):
// new connections per minute refused at connect with 421, MAIL commands per
// hour refused with 450. Both are temporary on purpose: a real MTA slows
// down and retries; a spam cannon gives up.
//
// Clients are counted per IPv4 address or per IPv6 /64 (one host can own a
// whole /64). The windows slide: each key keeps the count of the current and
// the previous fixed window, and the previous one is weighted by how much of
// it still overlaps the sliding window (Cloudflare's sliding-window counter).
// That is O(1) memory per client whatever the limit, and the number of
// clients tracked is capped, the least recently seen going first.

import type { Check, SessionInfo } from './policy.ts';
import { SmtpError } from '../smtp/reply.ts';
import { ipKey } from './auth-throttle.ts';
import type { SharedCounts } from './shared-counts.ts';

/** Clients tracked per counter at most; beyond that the least recently seen are forgotten. */
export const MAX_RATE_KEYS = 100_000;

interface Window {
  /** Start of the current fixed window. */
  start: number;
  current: number;
  previous: number;
}

export class SlidingWindowCounter {
  readonly #windowMs: number;
  readonly #maxKeys: number;
  readonly #now: () => number;
  readonly #keys = new Map<string, Window>();

  constructor(windowMs: number, opts: { now?: () => number; maxKeys?: number } = {}) {
    this.#windowMs = windowMs;
    this.#now = opts.now ?? Date.now;
    this.#maxKeys = opts.maxKeys ?? MAX_RATE_KEYS;
  }

  /** Events for `key` in the last window (an estimate: exact while the previous window is empty). */
  count(key: string): number {
    const w = this.#keys.get(key);
    return w ? this.#estimate(w, this.#now()) : 0;
  }

  /** Count one event; returns the count including it. */
  hit(key: string): number {
    const now = this.#now();
    const w = this.#keys.get(key) ?? { start: now - (now % this.#windowMs), current: 0, previous: 0 };
    this.#roll(w, now);
    w.current++;
    // Re-insert: Map order is then least recently seen first.
    this.#keys.delete(key);
    this.#keys.set(key, w);
    if (this.#keys.size > this.#maxKeys) this.#keys.delete(this.#keys.keys().next().value!);
    return this.#estimate(w, now);
  }

  get size(): number {
    return this.#keys.size;
  }

  #roll(w: Window, now: number): void {
    const elapsed = Math.floor((now - w.start) / this.#windowMs);
    if (elapsed <= 0) return;
    w.previous = elapsed === 1 ? w.current : 0;
    w.current = 0;
    w.start += elapsed * this.#windowMs;
  }

  #estimate(w: Window, now: number): number {
    this.#roll(w, now);
    const overlap = 1 - (now - w.start) / this.#windowMs;
    return w.current + Math.floor(w.previous * overlap);
  }
}

export interface RateCheckOptions {
  /** New connections per client per minute; 0 = no limit. */
  connectionsPerMinute: number;
  /** MAIL commands (message transactions) per client per hour; 0 = no limit. */
  messagesPerHour: number;
  /** Trusted networks are never limited. */
  isTrusted: (ip: string) => boolean;
  now?: () => number;
  maxKeys?: number;
  /** Several nodes (a shared store): the other nodes' counts of the client are added (shared-counts.ts). */
  shared?: SharedCounts | undefined;
}

/**
 * Connect and mail stage limits for the `smtp` listener. Submission is for
 * authenticated users, who have per-user limits instead; an authenticated
 * user on port 25 (submission.authOnSmtp) is not held to the per-IP message rate.
 */
export class RateCheck implements Check {
  readonly name = 'rate';
  readonly #o: RateCheckOptions;
  readonly #connections: SlidingWindowCounter;
  readonly #messages: SlidingWindowCounter;

  constructor(opts: RateCheckOptions) {
    this.#o = opts;
    const counterOpts = { ...(opts.now ? { now: opts.now } : {}), ...(opts.maxKeys ? { maxKeys: opts.maxKeys } : {}) };
    this.#connections = new SlidingWindowCounter(60_000, counterOpts);
    this.#messages = new SlidingWindowCounter(3_600_000, counterOpts);
  }

  connect(s: SessionInfo): void {
    const limit = this.#o.connectionsPerMinute;
    if (limit <= 0 || s.role !== 'smtp' || this.#o.isTrusted(s.remoteAddress)) return;
    // Every attempt counts, refused ones too: a client has to actually slow down.
    const key = ipKey(s.remoteAddress);
    this.#o.shared?.add(`conn:${key}`, 1);
    const elsewhere = this.#o.shared?.others(`conn:${key}`, 60_000) ?? 0;
    if (this.#connections.hit(key) + elsewhere > limit) {
      throw new SmtpError(421, '4.7.0', 'Too many connections from your address, slow down');
    }
  }

  mail(s: SessionInfo): void {
    const limit = this.#o.messagesPerHour;
    if (limit <= 0 || s.role !== 'smtp' || s.user !== undefined || this.#o.isTrusted(s.remoteAddress)) return;
    const key = ipKey(s.remoteAddress);
    // Only transactions let through count, so a client that waits gets in again.
    const elsewhere = this.#o.shared?.others(`mail:${key}`, 3_600_000) ?? 0;
    if (this.#messages.count(key) + elsewhere >= limit) {
      throw new SmtpError(450, '4.7.1', `Too many messages from your address (limit ${limit} per hour); try again later`);
    }
    this.#messages.hit(key);
    this.#o.shared?.add(`mail:${key}`, 1);
  }
}
