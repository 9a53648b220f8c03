// Counters the hot path bumps for next to nothing. prom-client's own
// `counter.labels(…).inc()` builds a key string from the label values and
// validates them again on every call; our label sets are few and fixed (a
// listener role, a transport, a result), so each is made once, as a plain
// number, and prom-client reads them all when /metrics is scraped (its
// `collect` hook, which runs before every exposition). Bumping is then one
// addition, with nothing allocated, however many messages a second pass.

import { Counter } from 'prom-client';
import { registry } from './registry.ts';

/** One label set's value: keep the object (made once) and call inc(). */
export class Count {
  value = 0;

  inc(n = 1): void {
    this.value += n;
  }
}

export interface CounterSpec<L extends string> {
  /** Prometheus naming: `tern_` prefix, `_total` suffix. */
  name: string;
  help: string;
  labelNames: readonly L[];
}

/**
 * A counter family registered in the process's registry (registry.ts).
 * Children appear in the exposition from the moment they are made, at 0:
 * Prometheus needs a series to exist before its first increment for
 * rate() and increase() to see that increment (its own advice: "avoid
 * missing metrics"), so make the children you know of up front.
 */
export class CounterFamily<L extends string> {
  readonly name: string;
  readonly #labelNames: readonly L[];
  readonly #children = new Map<string, { labels: Record<L, string>; count: Count }>();

  constructor(spec: CounterSpec<L>) {
    this.name = spec.name;
    this.#labelNames = spec.labelNames;
    const children = this.#children;
    new Counter<L>({
      name: spec.name,
      help: spec.help,
      labelNames: spec.labelNames,
      registers: [registry],
      // Rebuilt from our numbers at each scrape: O(children), a few dozen at most.
      collect(this: Counter<L>) {
        this.reset();
        for (const { labels, count } of children.values()) this.inc(labels, count.value);
      },
    });
  }

  /**
   * The child for these label values, made on first use. The lookup builds
   * a key, so call it once (at module load, in a constructor) and keep the
   * Count; a label value must come from a bounded set (never an address, a
   * host name or a reply text: each value is a series kept forever).
   */
  child(labels: Record<L, string>): Count {
    const key = this.#labelNames.map((n) => labels[n]).join('\0');
    let c = this.#children.get(key);
    if (!c) {
      c = { labels: { ...labels }, count: new Count() };
      this.#children.set(key, c);
    }
    return c.count;
  }
}
