// API keys: `tern_` and 32 random bytes in base64url, shown once; the store
// keeps only their SHA-256. A password hash (scrypt, as for users) exists to
// slow down guessing of low-entropy secrets; a 256-bit random key cannot be
// guessed however fast the hash, and a fast hash lets every request look its
// key up by an index instead of trying each stored salt.

import { hash, randomBytes } from 'node:crypto';
import type { ApiKeyRecord, Store } from '../store/store.ts';

export const KEY_PREFIX = 'tern_';
/** 256 bits: beyond any brute force, so an unsalted fast hash is enough. */
const KEY_BYTES = 32;

export function newApiKey(): string {
  return KEY_PREFIX + randomBytes(KEY_BYTES).toString('base64url');
}

export function hashApiKey(key: string): string {
  // One-shot crypto.hash: no Hash object per request (the lookup runs on every API call).
  return hash('sha256', key, 'hex');
}

/** A key name: what `tern apikey revoke NAME` and the logs show. */
export function apiKeyNameProblem(name: string): string | undefined {
  return /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(name) ? undefined : 'a key name is 1-64 letters, digits, ".", "_" or "-", starting with a letter or digit';
}

/**
 * Keys by hash, so a request does not cost a store read (a round trip with
 * PostgreSQL; with the embedded store a statement, which measured 4 % of
 * the server's CPU per API request).
 *
 * - A shared store (several nodes) has onChange (LISTEN/NOTIFY): keys are
 *   dropped whenever any node changes the table, and at the latest after
 *   `maxAgeMs` (60 s) in case an announcement was lost.
 * - The embedded store tells nothing when `tern apikey revoke`, another
 *   process, writes the same database: keys are kept EMBEDDED_MAX_AGE_MS
 *   (1 s), so a revoked key stops working within a second. A change made
 *   through this server (the dashboard) calls clear() and counts at once.
 */
export const EMBEDDED_MAX_AGE_MS = 1000;

export class ApiKeyCache {
  readonly #lookup: (hash: string) => ApiKeyRecord | null;
  readonly #entries = new Map<string, { key: ApiKeyRecord | null; until: number }>();
  readonly #maxAgeMs: number;
  readonly #now: () => number;
  readonly #max: number;

  constructor(store: Pick<Store, 'apiKeyByHash' | 'onChange'>, opts: { maxAgeMs?: number; now?: () => number; max?: number } = {}) {
    this.#lookup = (h) => store.apiKeyByHash(h);
    const shared = typeof store.onChange === 'function';
    this.#maxAgeMs = opts.maxAgeMs ?? (shared ? 60_000 : EMBEDDED_MAX_AGE_MS);
    this.#now = opts.now ?? Date.now;
    this.#max = opts.max ?? 10_000;
    store.onChange?.('api_keys', () => this.clear());
  }

  /** Forgets every key: the next request reads the store. */
  clear(): void {
    this.#entries.clear();
  }

  /**
   * The record of the key a request presents, looked up by its SHA-256 on
   * every request. Nothing keeps the presented key itself: a copy of the
   * server's memory gives away no key (the store has only hashes, too). The
   * one-shot hash costs about 0.2 µs; session 8 kept a map from presented
   * key to hash when a Hash object per request cost 6 µs.
   */
  byKey(presented: string): ApiKeyRecord | null {
    return this.byHash(hashApiKey(presented));
  }

  byHash(hash: string): ApiKeyRecord | null {
    const now = this.#now();
    const hit = this.#entries.get(hash);
    if (hit && hit.until > now) return hit.key;
    const key = this.#lookup(hash);
    if (this.#entries.size >= this.#max) this.#entries.clear();
    this.#entries.set(hash, { key, until: now + this.#maxAgeMs });
    return key;
  }
}
