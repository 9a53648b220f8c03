// Logins that were checked recently, so the next one with the same password
// costs an HMAC instead of a scrypt derivation (Dovecot's auth cache does the
// same). A mail client opens a connection per folder or per message and logs
// in each time; an application's pool logs in 20 times at once. The
// derivation is deliberately slow (scrypt, src/store/passwords.ts: tens of
// milliseconds of CPU and 32 MiB), which is right once and ruinous per
// message.
//
// What is kept: HMAC-SHA256 under a key made at start and never stored, of
// the account's stored password hash and the password given. A changed
// password (a new hash) or a deleted account (no record to ask about) never
// matches; nothing is written to disk; entries expire. Someone who can read
// this process's memory could test guesses against an entry quickly, but
// could equally read passwords as they arrive: the cache adds no new way in.
//
// Identical attempts in flight share one derivation, so 20 parallel logins
// with the right password cost one scrypt and are not counted as 20
// pending failures by the throttle (src/policy/auth-throttle.ts).

import { createHmac, randomBytes } from 'node:crypto';

/** How long a checked login is remembered (Dovecot's auth_cache_ttl is an hour; shorter bounds a stolen session's reuse of a changed-elsewhere password). */
export const VERIFIED_TTL_MS = 15 * 60_000;
/** Entries at most; the oldest go first. */
export const VERIFIED_MAX = 10_000;

export class VerifiedLogins {
  readonly #key = randomBytes(32);
  readonly #now: () => number;
  readonly #ttl: number;
  readonly #max: number;
  /** tag → expiry (ms); insertion order is age. */
  readonly #entries = new Map<string, number>();
  readonly #inflight = new Map<string, Promise<boolean>>();

  constructor(o: { now?: () => number; ttlMs?: number; max?: number } = {}) {
    this.#now = o.now ?? Date.now;
    this.#ttl = o.ttlMs ?? VERIFIED_TTL_MS;
    this.#max = o.max ?? VERIFIED_MAX;
  }

  tag(passwordHash: string, password: string): string {
    return createHmac('sha256', this.#key).update(passwordHash).update('\0').update(password, 'utf8').digest('base64');
  }

  /** This exact login succeeded within the TTL. */
  known(tag: string): boolean {
    const exp = this.#entries.get(tag);
    if (exp === undefined) return false;
    if (exp > this.#now()) return true;
    this.#entries.delete(tag);
    return false;
  }

  /** The derivation of an identical attempt still running, to wait for instead of starting another. */
  inflight(tag: string): Promise<boolean> | undefined {
    return this.#inflight.get(tag);
  }

  /** Runs `verify` as the one derivation for `tag`; remembers a success. */
  async verify(tag: string, verify: () => Promise<boolean>): Promise<boolean> {
    const p = verify();
    this.#inflight.set(tag, p);
    try {
      const ok = await p;
      if (ok) this.#remember(tag);
      return ok;
    } finally {
      this.#inflight.delete(tag);
    }
  }

  #remember(tag: string): void {
    this.#entries.delete(tag);
    this.#entries.set(tag, this.#now() + this.#ttl);
    while (this.#entries.size > this.#max) this.#entries.delete(this.#entries.keys().next().value!);
  }

  get size(): number {
    return this.#entries.size;
  }
}
