// The one Prometheus registry of the process (prom-client). Each metric is
// declared once, next to the code that bumps it, and registers here; the
// http listener serves it at /metrics (src/api/server.ts). Counting is a
// property increment on a labelled child made once (`counter.labels(…)` at
// module load or first use), so the hot path pays no label hashing.

import { Registry } from 'prom-client';

export const registry = new Registry();

/** The text exposition format (Prometheus text 0.0.4), as scraped. */
export async function exposition(): Promise<{ contentType: string; body: string }> {
  return { contentType: registry.contentType, body: await registry.metrics() };
}
