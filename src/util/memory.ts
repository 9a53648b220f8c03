// Freeing socket buffers promptly while large messages stream through.
//
// Every socket read is a new Buffer whose memory lives outside V8's heap.
// Once a chunk is on disk it is garbage, but V8 collects such memory only
// when its young generation fills (a chunk's JS wrapper is a few hundred
// bytes, so that takes thousands of chunks) or when ~64 MB of external
// memory has piled up. Receiving a 100 MB message would raise the RSS by
// about that much. So, after every EXTERNAL_CHURN bytes of message data
// written to the spool, we ask for a minor GC (a scavenge: young objects
// only, well under a millisecond), which frees the dead chunks' memory.

import v8 from 'node:v8';
import vm from 'node:vm';

/** Bytes of streamed message data between two scavenges. */
export const EXTERNAL_CHURN = 8 * 1024 * 1024;

type GcFn = (opts: { type: 'minor' | 'major'; execution?: 'sync' | 'async' }) => void;

let gc: GcFn | null | undefined;
let churned = 0;

function getGc(): GcFn | null {
  if (gc !== undefined) return gc;
  try {
    // --expose-gc can be set at run time; the function then exists in new contexts.
    v8.setFlagsFromString('--expose-gc');
    gc = vm.runInNewContext('gc') as GcFn;
  } catch {
    gc = null;
  }
  return gc;
}

/** Count bytes that are now garbage outside the heap; every EXTERNAL_CHURN, scavenge. */
export function noteExternalGarbage(bytes: number): void {
  churned += bytes;
  if (churned < EXTERNAL_CHURN) return;
  churned = 0;
  getGc()?.({ type: 'minor' });
}
