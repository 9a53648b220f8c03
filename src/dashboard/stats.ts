// The overview's figures, kept as they happen: counters per minute, hour
// and day (dash_stats, src/store/dashboard.ts), bumped inside the events'
// own transaction (EventRecorder.alsoWrite), so a figure is in the table
// exactly when its event is, and the overview reads a few hundred rows
// whatever the number of events stored (issue 14: under 200 ms with a
// million). A batch is summed in memory first: one upsert per distinct
// (span, metric, bucket, key) of the batch, not one per event.
//
// Buckets are aligned to UTC (a day is 00:00–24:00 UTC): a Unix time
// divides into them without a time zone, and the front end labels them in
// the viewer's own.

import type { StoredEvent } from '../store/store.ts';
import type { DashboardStore, StatDelta } from '../store/dashboard.ts';

export const MINUTE = 60_000;
export const HOUR = 60 * MINUTE;
export const DAY = 24 * HOUR;

/** What each view shows: its bucket span and how many buckets, the current one last. */
export const RANGES = {
  hour: { span: MINUTE, buckets: 60 },
  day: { span: HOUR, buckets: 24 },
  month: { span: DAY, buckets: 30 },
} as const;
export type Range = keyof typeof RANGES;

/**
 * How long rows of each span are kept: the longest view reading it, and
 * some margin (a view's first bucket starts up to one span before the
 * view's length).
 */
export const KEPT: ReadonlyMap<number, number> = new Map([
  [MINUTE, 2 * HOUR],
  [HOUR, 2 * DAY],
  [DAY, 35 * DAY],
]);

/** The series of the charts (key ''): messages received, and attempts delivered, deferred, bounced. */
export const SERIES = ['received', 'delivered', 'deferred', 'bounced'] as const;
export type Series = (typeof SERIES)[number];
/** outbound: delivered remote attempts by key 'tls' or 'plain'; domain: by recipient domain; bounceClass: bounced attempts by class. */
export const KEYED = ['outbound', 'domain', 'bounceClass'] as const;
export const METRICS = [...SERIES, ...KEYED] as const;

/** The transports that leave this host (src/delivery/remote.ts): TLS and destinations are counted for these. */
const OUTBOUND_TRANSPORTS = new Set(['mx', 'smarthost']);
/** Entries in the top lists. */
export const TOP = 10;

/** What a maintainer remembers between batches. */
export interface StatsState {
  /** The queue id of the last `queued` event seen. */
  lastQueued: string;
}

/**
 * The increments `batch` makes. "received" counts messages, not
 * recipients: intake emits every recipient's `queued` event in one
 * synchronous loop (src/tern.ts, onQueued), so a message's queued events
 * are consecutive in the stream (and in the recorder's batches, which keep
 * its order), and a queued event counts when its queue id differs from the
 * previous queued event's. Carried in `state`, this holds across batch
 * boundaries too, where a per-batch Set of ids would count a message split
 * between two batches twice.
 */
export function statDeltas(batch: readonly StoredEvent[], state: StatsState): StatDelta[] {
  const sums = new Map<string, StatDelta>();
  const add = (t: number, metric: string, key: string): void => {
    for (const span of KEPT.keys()) {
      const bucket = t - (t % span);
      const id = `${span}\0${metric}\0${bucket}\0${key}`;
      const d = sums.get(id);
      if (d) d.count++;
      else sums.set(id, { span, metric, bucket, key, count: 1 });
    }
  };
  for (const { event } of batch) {
    const t = Date.parse(event.timestamp);
    if (!Number.isFinite(t)) continue;
    switch (event.type) {
      case 'queued':
        if (event.queueId !== state.lastQueued) add(t, 'received', '');
        state.lastQueued = event.queueId;
        break;
      case 'delivered':
        add(t, 'delivered', '');
        if (OUTBOUND_TRANSPORTS.has(event.data.transport ?? '')) {
          add(t, 'outbound', event.data.tls ? 'tls' : 'plain');
          add(t, 'domain', domainOf(event.recipient));
        }
        break;
      case 'deferred':
        add(t, 'deferred', '');
        break;
      case 'bounced':
        add(t, 'bounced', '');
        add(t, 'bounceClass', event.data.bounceClass ?? 'other');
        break;
      default:
        // expired, delayed, suppressed, complained: not among the overview's figures.
        break;
    }
  }
  return [...sums.values()];
}

function domainOf(address: string): string {
  return address.slice(address.lastIndexOf('@') + 1).toLowerCase();
}

/**
 * Keeps dash_stats: `write` goes to EventRecorder.alsoWrite (it runs in the
 * batch's transaction), and drops rows past their span's KEPT once per
 * minute of the clock, so the table holds about two hours of minutes, two
 * days of hours and five weeks of days. Each prune deletes what aged out
 * since the last one: bounded by what was written meanwhile.
 */
export class StatsMaintainer {
  readonly #store: DashboardStore;
  readonly #now: () => number;
  readonly #state: StatsState = { lastQueued: '' };
  #prunedMinute = 0;

  constructor(store: DashboardStore, now: () => number = Date.now) {
    this.#store = store;
    this.#now = now;
  }

  readonly write = (batch: StoredEvent[]): void => {
    const deltas = statDeltas(batch, this.#state);
    if (deltas.length > 0) this.#store.addStats(deltas);
    const minute = Math.floor(this.#now() / MINUTE);
    if (minute !== this.#prunedMinute) {
      this.#prunedMinute = minute;
      this.prune();
    }
  };

  /** Deletes rows older than their span keeps; returns how many went. */
  prune(now = this.#now()): number {
    let n = 0;
    for (const [span, kept] of KEPT) for (const metric of METRICS) n += this.#store.pruneStats(span, metric, now - kept - span);
    return n;
  }
}

export interface OverviewStats {
  range: Range;
  /** Epoch ms of each bucket's start, oldest first. */
  buckets: number[];
  series: Record<Series, number[]>;
  tls: { tls: number; total: number };
  topDomains: { domain: string; count: number }[];
  topBounceClasses: { bounceClass: string; count: number }[];
}

/** The first bucket of `range` at `now`. */
export function rangeStart(range: Range, now: number): number {
  const { span, buckets } = RANGES[range];
  return now - (now % span) - (buckets - 1) * span;
}

/** The overview's figures for `range` from the aggregates: a handful of index range reads. */
export function overviewStats(store: DashboardStore, range: Range, now: number): OverviewStats {
  const { span, buckets: count } = RANGES[range];
  const from = rangeStart(range, now);
  const buckets = Array.from({ length: count }, (_, i) => from + i * span);
  const series = Object.fromEntries(SERIES.map((s) => [s, new Array<number>(count).fill(0)])) as Record<Series, number[]>;
  for (const r of store.series(span, SERIES, from)) {
    const i = (r.bucket - from) / span;
    if (i >= 0 && i < count) series[r.metric as Series][i] = r.count;
  }
  const outbound = new Map(store.topKeys(span, 'outbound', from, 2).map((r) => [r.key, r.count]));
  const tls = outbound.get('tls') ?? 0;
  return {
    range,
    buckets,
    series,
    tls: { tls, total: tls + (outbound.get('plain') ?? 0) },
    topDomains: store.topKeys(span, 'domain', from, TOP).map((r) => ({ domain: r.key, count: r.count })),
    topBounceClasses: store.topKeys(span, 'bounceClass', from, TOP).map((r) => ({ bounceClass: r.key, count: r.count })),
  };
}

/** The current minute's figures (the live stream's `minute`). */
export function currentMinute(store: DashboardStore, now: number): Record<Series, number> {
  const got = store.bucketTotals(MINUTE, SERIES, now - (now % MINUTE));
  return Object.fromEntries(SERIES.map((s) => [s, got.get(s) ?? 0])) as Record<Series, number>;
}
