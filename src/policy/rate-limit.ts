// Per-user sending rate: messages in a sliding hour. In memory, per node:
// a restart forgets the counts, which errs on the side of delivering mail.
// With several nodes (a shared store) the other nodes' counts are added
// (shared-counts.ts: exchanged once a second, so the limit holds across
// nodes within a second's worth of sending).

import type { SharedCounts } from './shared-counts.ts';

const HOUR = 3_600_000;
/** Keep at most this many users' counters; the least recently used go first. */
const MAX_USERS = 100_000;

export class SendRate {
  readonly #now: () => number;
  readonly #sent = new Map<string, number[]>();
  readonly #shared: SharedCounts | undefined;

  constructor(now: () => number = Date.now, shared?: SharedCounts) {
    this.#now = now;
    this.#shared = shared;
  }

  /** Messages this user sent in the last hour (through every node, with a shared store). */
  count(user: string): number {
    const times = this.#prune(user);
    return (times ? times.length : 0) + (this.#shared?.others(`send:${user}`, HOUR) ?? 0);
  }

  record(user: string): void {
    this.#shared?.add(`send:${user}`, 1);
    const times = this.#prune(user) ?? [];
    times.push(this.#now());
    this.#sent.delete(user);
    this.#sent.set(user, times);
    if (this.#sent.size > MAX_USERS) this.#sent.delete(this.#sent.keys().next().value!);
  }

  /** Take back the latest record (a transaction counted at MAIL that never became a message). */
  unrecord(user: string): void {
    if (this.#sent.get(user)?.pop() !== undefined) this.#shared?.add(`send:${user}`, -1);
  }

  #prune(user: string): number[] | undefined {
    const times = this.#sent.get(user);
    if (!times) return undefined;
    const cutoff = this.#now() - HOUR;
    let i = 0;
    while (i < times.length && times[i]! <= cutoff) i++;
    if (i > 0) times.splice(0, i);
    return times;
  }
}
