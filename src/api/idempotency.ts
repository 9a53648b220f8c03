// Idempotency-Key on the two sends (CONTRACT.md): a retry with the same key
// and the same body within 24 h gets the first response and queues nothing;
// the same key with another body is 422; while the first is in flight, 409.
// The entries live in the store (node:sqlite), so they hold across a restart
// and, on a shared store, across nodes; they are scoped to the API key.
//
// Only a success is remembered (202, or a batch's 207). A refused request
// queued nothing, so its claim is released and a retry simply runs again
// (and may succeed, e.g. once the missing local user exists).

import { createHash } from 'node:crypto';
import type { IdempotencyEntry, IdempotencyStore } from '../store/store.ts';
import type { Logger } from '../util/log.ts';
import { ApiError } from './problem.ts';
import { deleteInBatches } from '../util/batches.ts';

/** How long a key's first response is kept and replayed. */
export const IDEMPOTENCY_TTL_MS = 24 * 60 * 60 * 1000;
/**
 * A claim with no response after this long is given up: the process that
 * made it died before answering (a request itself ends within seconds).
 * Until then a retry gets 409, as the first may still be running elsewhere.
 */
export const IN_FLIGHT_TIMEOUT_MS = 5 * 60 * 1000;
/** Entries deleted per statement when expiring. */
export const IDEMPOTENCY_EXPIRY_BATCH = 1000;

export interface Outcome {
  status: number;
  body: unknown;
}

/** JSON with object keys sorted at every level: two bodies that differ only in key order or whitespace are the same request. */
export function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o).sort().map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`).join(',')}}`;
  }
  return JSON.stringify(v) ?? 'null';
}

/** The identity of a request: the route and the canonical body (the same key on the other send route is a different body). */
export function requestHash(route: string, body: unknown): string {
  return createHash('sha256').update(`${route}\n${canonicalJson(body)}`).digest('hex');
}

export class Idempotency {
  readonly #store: IdempotencyStore;
  readonly #log: Logger;
  #expiring = false;
  #closed = false;

  constructor(store: IdempotencyStore, log: Logger) {
    this.#store = store;
    this.#log = log;
  }

  /** Runs `send` once per (apiKey, idemKey, request); `replayed` says the answer is the stored first one. */
  async run(apiKey: string, idemKey: string, route: string, body: unknown, send: () => Promise<Outcome>, now = Date.now()): Promise<Outcome & { replayed: boolean }> {
    const hash = requestHash(route, body);
    const isStale = (e: IdempotencyEntry): boolean => e.createdAt <= now - IDEMPOTENCY_TTL_MS || (e.response === null && e.createdAt <= now - IN_FLIGHT_TIMEOUT_MS);
    const existing = this.#store.claimIdempotency(apiKey, idemKey, hash, now, isStale);
    if (existing) {
      if (existing.bodyHash !== hash) throw new ApiError(422, `The Idempotency-Key "${idemKey}" was used with a different request; use a new key for a new request`);
      if (existing.response === null) throw new ApiError(409, `A request with the Idempotency-Key "${idemKey}" is still in flight; retry after it is answered`);
      return { status: existing.response.status, body: JSON.parse(existing.response.body) as unknown, replayed: true };
    }
    let outcome: Outcome;
    try {
      outcome = await send();
    } catch (e) {
      this.#store.releaseIdempotency(apiKey, idemKey);
      throw e;
    }
    this.#store.finishIdempotency(apiKey, idemKey, { status: outcome.status, body: JSON.stringify(outcome.body) });
    return { ...outcome, replayed: false };
  }

  /** Deletes entries past the 24 h, a bounded batch per turn of the event loop; returns how many went. */
  async expire(now = Date.now()): Promise<number> {
    if (this.#expiring) return 0;
    this.#expiring = true;
    let total = 0;
    try {
      total = await deleteInBatches((limit) => this.#store.expireIdempotency(now - IDEMPOTENCY_TTL_MS, limit), IDEMPOTENCY_EXPIRY_BATCH, () => this.#closed);
    } catch (e) {
      this.#log.error('idempotency expiry failed', { error: e });
    } finally {
      this.#expiring = false;
    }
    return total;
  }

  /** Stops expiry between batches (before the store closes). */
  close(): void {
    this.#closed = true;
  }
}
