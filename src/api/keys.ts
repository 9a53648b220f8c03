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
  /** Presented key → its hash, for keys found (byKey). */
  readonly #hashes = new Map<string, string>();
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
    this.#hashes.clear();
  }

  /**
   * The record of the key a request presents. The key's hash is remembered
   * for keys that exist (a key's hash never changes; revocation is the
   * record's business, read through byHash as before): a SHA-256 per request
   * was 6 µs of the server's CPU per API send (bench/api.ts --profile).
   * Unknown keys are hashed every time, so guesses cannot fill the map.
   */
  byKey(presented: string): ApiKeyRecord | null {
    let hash = this.#hashes.get(presented);
    if (hash === undefined) {
      hash = hashApiKey(presented);
      const key = this.byHash(hash);
      if (key === null) return null;
      if (this.#hashes.size >= this.#max) this.#hashes.clear();
      this.#hashes.set(presented, hash);
      return key;
    }
    return this.byHash(hash);
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
