// A histogram the hot path feeds for next to nothing, as counter.ts does
// for counters. prom-client's Histogram#observe validates and hashes the
// labels, allocates, and finds the bucket through string-keyed objects on
// every call: a quarter of a microsecond at best, and in the profile of
// bench/profile.ts it was most of what metrics cost the server (issue 14
// allows 3 %). Here a child is a Float64Array of bucket counts, a sum and
// a count; observe() is a short loop over the bounds and three additions.
//
// The family is registered in the registry as a metric of its own, with
// what the registry asks of one (registry.js: name, help, type, get(),
// reset(), aggregator): get() gives the samples in prom-client's own shape
// (name_bucket with le, name_sum, name_count), which the registry formats
// into the text exposition like any histogram.

import { registry } from './registry.ts';

/** One label set's histogram. */
export class Timing {
  readonly #bounds: readonly number[];
  /** Observations per bucket, not cumulative (the exposition adds them up). */
  readonly counts: Float64Array;
  sum = 0;
  count = 0;

  constructor(bounds: readonly number[]) {
    this.#bounds = bounds;
    this.counts = new Float64Array(bounds.length);
  }

  /** One observation (Prometheus buckets are upper bounds, inclusive: le). */
  observe(value: number): void {
    const bounds = this.#bounds;
    let i = 0;
    while (i < bounds.length && value > bounds[i]!) i++;
    if (i < bounds.length) this.counts[i]!++;
    this.sum += value;
    this.count++;
  }
}

export interface HistogramSpec<L extends string> {
  name: string;
  help: string;
  labelNames: readonly L[];
  /** Upper bounds, ascending; +Inf is implied. */
  buckets: readonly number[];
}

interface Sample {
  labels: Record<string, string | number>;
  value: number;
  metricName: string;
}

/**
 * A histogram family registered in the process's registry. As with
 * CounterFamily, make the children you know of up front: each is listed
 * (at 0) from then on, so rate() sees its first observation.
 */
export class HistogramFamily<L extends string> {
  readonly name: string;
  readonly help: string;
  readonly type = 'histogram';
  /** How prom-client's cluster support would combine workers (unused here: one process). */
  readonly aggregator = 'sum';
  readonly #labelNames: readonly L[];
  readonly #buckets: readonly number[];
  readonly #children = new Map<string, { labels: Record<L, string>; timing: Timing }>();

  constructor(spec: HistogramSpec<L>) {
    if (spec.buckets.some((b, i) => i > 0 && b <= spec.buckets[i - 1]!)) throw new Error(`${spec.name}: buckets must ascend`);
    this.name = spec.name;
    this.help = spec.help;
    this.#labelNames = spec.labelNames;
    this.#buckets = [...spec.buckets];
    // The registry takes prom-client's own classes in its types; it asks nothing of a metric but what this class has.
    registry.registerMetric(this as unknown as Parameters<typeof registry.registerMetric>[0]);
  }

  /** The child for these label values, made on first use: call it once and keep it (the lookup builds a key). */
  child(labels: Record<L, string>): Timing {
    const key = this.#labelNames.map((n) => labels[n]).join('\0');
    let c = this.#children.get(key);
    if (!c) {
      c = { labels: { ...labels }, timing: new Timing(this.#buckets) };
      this.#children.set(key, c);
    }
    return c.timing;
  }

  /** The samples, as prom-client's histograms give them to the registry. */
  async get(): Promise<{ name: string; help: string; type: string; aggregator: string; values: Sample[] }> {
    const values: Sample[] = [];
    for (const { labels, timing } of this.#children.values()) {
      let cumulative = 0;
      for (let i = 0; i < this.#buckets.length; i++) {
        cumulative += timing.counts[i]!;
        values.push({ labels: { ...labels, le: this.#buckets[i]! }, value: cumulative, metricName: `${this.name}_bucket` });
      }
      values.push({ labels: { ...labels, le: '+Inf' }, value: timing.count, metricName: `${this.name}_bucket` });
      values.push({ labels: { ...labels }, value: timing.sum, metricName: `${this.name}_sum` });
      values.push({ labels: { ...labels }, value: timing.count, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }

  /** registry.resetMetrics(): every child back to 0 (kept, so its series stay listed). */
  reset(): void {
    for (const { timing } of this.#children.values()) {
      timing.counts.fill(0);
      timing.sum = 0;
      timing.count = 0;
    }
  }
}
