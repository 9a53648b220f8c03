// Failed-login throttling for AUTH (RFC 4954 §15 asks servers to slow down
// password guessing). Failures are counted per client IP (IPv6 per /64, which
// one host can own whole) and per account; each recent failure doubles the
// delay before the next answer, and too many lock the key out for a while.
// A success clears the account's count only: otherwise an attacker with one
// valid login could reset its IP's count between guesses at other accounts.
//
// Trade-off: the account lockout also stops the real owner (from any IP)
// while it lasts; it is temporary, and the price of slowing a guesser who
// spreads over many IPs.

import type { SharedCounts } from './shared-counts.ts';

export interface AuthThrottleOptions {
  now?: () => number;
  /** Delay after the first recent failure; doubles with each further one. */
  baseDelayMs?: number;
  maxDelayMs?: number;
  /** Failures within the window before a lockout. */
  lockoutAfter?: number;
  lockoutMs?: number;
  /** A key's count resets when its last failure is older than this. */
  windowMs?: number;
  /** Tracked keys at most (IPs + accounts); the least recently failed go first. */
  maxEntries?: number;
  /**
   * Several nodes (a shared store): the other nodes' failures within the
   * window are added (shared-counts.ts), so a guesser spreading over the
   * nodes meets the same delay and lockout; a success clears the account on
   * every node.
   */
  shared?: SharedCounts | undefined;
}

export const AUTH_THROTTLE_DEFAULTS = {
  baseDelayMs: 500,
  maxDelayMs: 8000,
  lockoutAfter: 10,
  lockoutMs: 15 * 60_000,
  windowMs: 15 * 60_000,
  maxEntries: 100_000,
};

interface Entry {
  failures: number;
  last: number;
  lockedUntil: number;
}

export class AuthThrottle {
  #now: () => number;
  readonly #shared: SharedCounts | undefined;
  #o: typeof AUTH_THROTTLE_DEFAULTS;
  /** Insertion order = order of last failure, so the first entries are the stalest. */
  #entries = new Map<string, Entry>();

  constructor(opts: AuthThrottleOptions = {}) {
    this.#now = opts.now ?? Date.now;
    this.#shared = opts.shared;
    this.#o = {
      baseDelayMs: opts.baseDelayMs ?? AUTH_THROTTLE_DEFAULTS.baseDelayMs,
      maxDelayMs: opts.maxDelayMs ?? AUTH_THROTTLE_DEFAULTS.maxDelayMs,
      lockoutAfter: opts.lockoutAfter ?? AUTH_THROTTLE_DEFAULTS.lockoutAfter,
      lockoutMs: opts.lockoutMs ?? AUTH_THROTTLE_DEFAULTS.lockoutMs,
      windowMs: opts.windowMs ?? AUTH_THROTTLE_DEFAULTS.windowMs,
      maxEntries: opts.maxEntries ?? AUTH_THROTTLE_DEFAULTS.maxEntries,
    };
  }

  /**
   * Before verifying a password: `locked` = refuse without checking (e.g.
   * 454 4.7.0 or 535 5.7.8); otherwise wait `delayMs` before answering
   * (whether the password turns out right or wrong, so the delay leaks nothing).
   */
  check(ip: string, account: string): { locked: boolean; delayMs: number } {
    const now = this.#now();
    let locked = false;
    let failures = 0;
    for (const key of keys(ip, account)) {
      const e = this.#live(key, now);
      const elsewhere = this.#shared?.others(`auth:${key}`, this.#o.windowMs) ?? 0;
      if (!e && elsewhere <= 0) continue;
      const count = (e?.failures ?? 0) + Math.max(0, elsewhere);
      // Locked here, or by the failures of every node together.
      if ((e && e.lockedUntil > now) || count >= this.#o.lockoutAfter) locked = true;
      failures = Math.max(failures, count);
    }
    const delayMs = failures === 0 ? 0 : Math.min(this.#o.maxDelayMs, this.#o.baseDelayMs * 2 ** Math.min(failures - 1, 30));
    return { locked, delayMs };
  }

  failure(ip: string, account: string): void {
    const now = this.#now();
    for (const key of keys(ip, account)) {
      const e = this.#live(key, now) ?? { failures: 0, last: now, lockedUntil: 0 };
      e.failures++;
      this.#shared?.add(`auth:${key}`, 1);
      e.last = now;
      if (e.failures >= this.#o.lockoutAfter && e.lockedUntil <= now) e.lockedUntil = now + this.#o.lockoutMs;
      this.#entries.delete(key); // re-insert at the end: most recent
      this.#entries.set(key, e);
    }
    this.#evict(now);
  }

  success(_ip: string, account: string): void {
    if (!account) return;
    this.#entries.delete(accountKey(account));
    this.#shared?.reset(`auth:${accountKey(account)}`);
  }

  /**
   * Take back one failure of this IP: for callers that count an attempt as a
   * failure before checking it (so attempts in parallel see each other) and
   * then find the password was right.
   */
  forgive(ip: string): void {
    const e = this.#entries.get('i:' + ipKey(ip));
    if (!e) return;
    this.#shared?.add(`auth:i:${ipKey(ip)}`, -1);
    e.failures = Math.max(0, e.failures - 1);
    if (e.failures < this.#o.lockoutAfter) e.lockedUntil = 0;
    if (e.failures === 0) this.#entries.delete('i:' + ipKey(ip));
  }

  /** Tracked keys (for tests and metrics). */
  get size(): number {
    return this.#entries.size;
  }

  /** The entry if it still matters: within the window or still locked. */
  #live(key: string, now: number): Entry | undefined {
    const e = this.#entries.get(key);
    if (!e) return undefined;
    if (e.lockedUntil > now || now - e.last < this.#o.windowMs) return e;
    this.#entries.delete(key);
    return undefined;
  }

  #evict(now: number): void {
    // Drop stale entries from the old end, then the oldest beyond the cap.
    for (const [key, e] of this.#entries) {
      if (e.lockedUntil > now || now - e.last < this.#o.windowMs) break;
      this.#entries.delete(key);
    }
    for (const key of this.#entries.keys()) {
      if (this.#entries.size <= this.#o.maxEntries) break;
      this.#entries.delete(key);
    }
  }
}

function accountKey(account: string): string {
  return 'a:' + account.toLowerCase();
}

function keys(ip: string, account: string): string[] {
  const out = ['i:' + ipKey(ip)];
  if (account) out.push(accountKey(account));
  return out;
}

/** IPv4 as is (also when IPv4-mapped); IPv6 reduced to its /64. */
export function ipKey(ip: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  if (mapped) return mapped[1]!;
  if (!ip.includes(':')) return ip;
  const [head = '', tail] = ip.toLowerCase().split('%')[0]!.split('::') as [string, string | undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array<string>(Math.max(0, 8 - h.length - t.length)).fill('0'), ...t];
  return groups.slice(0, 4).map((g) => g.replace(/^0+(?=.)/, '')).join(':') + '::/64';
}
