// API keys: `tern_` and 32 random bytes in base64url, shown once; the store
// keeps only their SHA-256. A password hash (scrypt, as for users) exists to
// slow down guessing of low-entropy secrets; a 256-bit random key cannot be
// guessed however fast the hash, and a fast hash lets every request look its
// key up by an index instead of trying each stored salt.

import { createHash, randomBytes } from 'node:crypto';
import type { ApiKeyRecord, Store } from '../store/store.ts';

export const KEY_PREFIX = 'tern_';
/** 256 bits: beyond any brute force, so an unsalted fast hash is enough. */
const KEY_BYTES = 32;

export function newApiKey(): string {
  return KEY_PREFIX + randomBytes(KEY_BYTES).toString('base64url');
}

export function hashApiKey(key: string): string {
  return createHash('sha256').update(key, 'utf8').digest('hex');
}

/** A key name: what `tern apikey revoke NAME` and the logs show. */
export function apiKeyNameProblem(name: string): string | undefined {
  return /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(name) ? undefined : 'a key name is 1-64 letters, digits, ".", "_" or "-", starting with a letter or digit';
}

/**
 * Keys by hash, for a shared store (PostgreSQL, several nodes): a lookup
 * there is a round trip per request, so keys are kept here and dropped
 * whenever any node changes the table (the store's onChange: LISTEN/NOTIFY),
 * and at the latest after `maxAgeMs` in case an announcement was lost. The
 * embedded store has no onChange: every request reads it, as before (a local
 * index lookup), so a key revoked by `tern apikey revoke` stops at once.
 */
export class ApiKeyCache {
  readonly #lookup: (hash: string) => ApiKeyRecord | null;
  readonly #entries = new Map<string, { key: ApiKeyRecord | null; until: number }>();
  readonly #maxAgeMs: number;
  readonly #now: () => number;
  readonly #enabled: boolean;
  readonly #max: number;

  constructor(store: Pick<Store, 'apiKeyByHash' | 'onChange'>, opts: { maxAgeMs?: number; now?: () => number; max?: number } = {}) {
    this.#lookup = (h) => store.apiKeyByHash(h);
    this.#maxAgeMs = opts.maxAgeMs ?? 60_000;
    this.#now = opts.now ?? Date.now;
    this.#max = opts.max ?? 10_000;
    this.#enabled = typeof store.onChange === 'function';
    store.onChange?.('api_keys', () => this.#entries.clear());
  }

  byHash(hash: string): ApiKeyRecord | null {
    if (!this.#enabled) return this.#lookup(hash);
    const now = this.#now();
    const hit = this.#entries.get(hash);
    if (hit && hit.until > now) return hit.key;
    const key = this.#lookup(hash);
    if (this.#entries.size >= this.#max) this.#entries.clear();
    this.#entries.set(hash, { key, until: now + this.#maxAgeMs });
    return key;
  }
}
