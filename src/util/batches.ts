// Deleting expired rows from a table that may hold millions: one bounded
// statement per event-loop turn, so sessions sharing the loop never wait for
// a whole sweep (nothing O(table) in one go).

import { setImmediate as nextTurn } from 'node:timers/promises';

/**
 * Calls `deleteBatch(limit)` until it removes fewer than `limit` rows or
 * `stopped()` says the owner is closing; yields to the event loop between
 * batches. Returns the rows removed.
 */
export async function deleteInBatches(deleteBatch: (limit: number) => number, limit: number, stopped: () => boolean): Promise<number> {
  let total = 0;
  while (!stopped()) {
    const n = deleteBatch(limit);
    total += n;
    if (n < limit) break;
    await nextTurn();
  }
  return total;
}
