// tern_suppressions, declared here for the suppression list (src/suppress/)
// to report: its size, read at each scrape from the list's in-memory Map,
// so keeping the gauge current costs nothing when addresses come and go.
// Declared apart from that code only while it is being written; it moves
// next to the list once that settles.

import { Gauge } from 'prom-client';
import { registry } from './registry.ts';

/** In production one list; tests may start several servers in one process, and theirs add up. */
const lists = new Set<() => number>();

new Gauge({
  name: 'tern_suppressions',
  help: 'Addresses on the suppression list (outbound mail is not sent to them).',
  registers: [registry],
  collect(this: Gauge) {
    let n = 0;
    for (const size of lists) n += size();
    this.set(n);
  },
});

/** Report `size()` (O(1): a Map's size) until the returned function is called (at stop). */
export function watchSuppressions(size: () => number): () => void {
  lists.add(size);
  return () => {
    lists.delete(size);
  };
}
