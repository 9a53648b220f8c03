// tern_queue_messages: the queue by state, read from the scheduler's own
// counts when /metrics is scraped (a collect hook). Nothing is counted per
// message and nothing walks the queue: the scheduler keeps the three
// numbers anyway, so a scrape costs the same with 10 or 100,000 messages
// queued ("Nothing O(queue) on a timer", docs/architecture.md).

import { Gauge } from 'prom-client';
import { registry } from './registry.ts';

/** What the scheduler tells in O(1) (Scheduler#counts). */
export interface QueueCounts {
  /** Every message in the queue. */
  total: number;
  /** Waiting for a later attempt (the scheduler's time index): deferred mail. */
  waiting: number;
  held: number;
}

export interface CountedQueue {
  readonly counts: QueueCounts;
}

/** In production one scheduler; tests start several servers in one process, and their queues add up. */
const queues = new Set<CountedQueue>();

/** The states, each message in exactly one, so sum() is the queue's size. */
export const QUEUE_STATES = ['active', 'deferred', 'held'] as const;

/**
 * active: in a delivery round (being delivered, or waiting for a free
 * delivery slot: outbound.concurrency, outbound.perDestination); deferred:
 * waiting for its next attempt; held: `tern queue hold`.
 */
export function queueStates(c: QueueCounts): Record<(typeof QUEUE_STATES)[number], number> {
  return { active: Math.max(0, c.total - c.waiting - c.held), deferred: c.waiting, held: c.held };
}

new Gauge({
  name: 'tern_queue_messages',
  help: 'Messages in the queue by state: active (in a delivery round), deferred (waiting for the next attempt), held (tern queue hold).',
  labelNames: ['state'],
  registers: [registry],
  collect(this: Gauge<'state'>) {
    const sum = { active: 0, deferred: 0, held: 0 };
    for (const q of queues) {
      const s = queueStates(q.counts);
      for (const state of QUEUE_STATES) sum[state] += s[state];
    }
    for (const state of QUEUE_STATES) this.set({ state }, sum[state]);
  },
});

/** Report this queue in tern_queue_messages until the returned function is called (at stop). */
export function watchQueue(queue: CountedQueue): () => void {
  queues.add(queue);
  return () => {
    queues.delete(queue);
  };
}
