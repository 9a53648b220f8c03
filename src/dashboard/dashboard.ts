// The dashboard's server side as one object (docs/dashboard.md): built once
// in src/tern.ts, attached to the events recorder (the aggregates commit
// with the events; the live stream hears of each commit), mounted on each
// http listener (routes.ts), closed when the server stops. The front end
// (web/, served by static.ts) talks to it only through /ui/.

import type { ApiKeyCache } from '../api/keys.ts';
import type { FastifyInstance } from 'fastify';
import type { Readable } from 'node:stream';
import type { Store } from '../store/store.ts';
import type { QueuedMessage } from '../spool/types.ts';
import type { Scheduler } from '../queue/scheduler.ts';
import type { AuthThrottle } from '../policy/auth-throttle.ts';
import type { SuppressionApi } from '../api/suppression-routes.ts';
import type { WebhookApi } from '../api/webhook-routes.ts';
import type { EventWriter } from '../webhooks/webhooks.ts';
import type { Logger } from '../util/log.ts';
import { registry } from '../metrics/registry.ts';
import { StatsMaintainer, currentMinute, overviewStats, type OverviewStats, type Range, type Series } from './stats.ts';
import { Sessions } from './sessions.ts';
import { LiveHub } from './live.ts';
import { queueCounts, readHeaderSection, type QueueCounts, type QueueView } from './queue.ts';
import { mountDashboardRoutes } from './routes.ts';

export interface DashboardDeps {
  store: Store;
  scheduler: QueueView & Pick<Scheduler, 'show' | 'get' | 'retry' | 'hold' | 'release' | 'delete'>;
  spool: { openMessage(msg: QueuedMessage): Readable };
  /** The AuthThrottle SMTP AUTH uses: guesses over both add up. */
  throttle: AuthThrottle;
  /** SMTP AUTH's credential check over the same throttle (an Authenticator of the store's users). */
  authenticate: (ip: string, login: string, password: string) => Promise<unknown>;
  suppressions: SuppressionApi['list'];
  /** The webhooks (absent: their routes are not served). */
  webhooks?: WebhookApi | undefined;
  /** Writes the events still gathering (EventRecorder.drain): reads see what just happened. */
  flushEvents: () => Promise<void>;
  /** The API's key cache: a key made or revoked here counts at the API's next request. */
  apiKeys?: Pick<ApiKeyCache, 'clear'> | undefined;
  /** submission.minPasswordLength, as currently loaded. */
  minPasswordLength: () => number;
  log: Logger;
  now?: () => number;
}

/** The inbound checks the overview shows pass rates of (tern_inbound_results_total's `check` label). */
const INBOUND_CHECKS = ['spf', 'dkim', 'dmarc'] as const;
type InboundRates = Record<(typeof INBOUND_CHECKS)[number], { pass: number; total: number }>;

/** When this process started: the inbound counters (prom-client's, in memory) count from then. */
const PROCESS_START = Math.round(performance.timeOrigin);

export interface Overview extends OverviewStats {
  queue: QueueCounts;
  inbound: InboundRates;
  /** Epoch ms from which `inbound` counts (the process's start: those counters are not stored). */
  inboundSince: number;
}

export interface LiveUpdate {
  at: number;
  minute: Record<Series, number>;
  queue: QueueCounts;
}

export class Dashboard {
  readonly deps: DashboardDeps;
  readonly stats: StatsMaintainer;
  readonly sessions: Sessions;
  readonly live: LiveHub;
  readonly #now: () => number;

  constructor(deps: DashboardDeps) {
    this.deps = deps;
    this.#now = deps.now ?? Date.now;
    this.stats = new StatsMaintainer(deps.store.dashboard, this.#now);
    this.sessions = new Sessions({ users: deps.store, store: deps.store.dashboard, throttle: deps.throttle, authenticate: deps.authenticate, now: this.#now });
    this.live = new LiveHub({
      snapshot: () => this.liveUpdate(),
      queueSignature: () => {
        const c = queueCounts(deps.scheduler);
        return `${c.total} ${c.queued} ${c.active} ${c.deferred} ${c.held}`;
      },
      onError: (e) => deps.log.error('dashboard live update failed', { error: e }),
      now: this.#now,
    });
  }

  /** The aggregates are written in each events batch's transaction; each commit owes the live streams an update. */
  attach(recorder: EventWriter): void {
    recorder.alsoWrite(this.stats.write);
    recorder.afterWrite(() => this.live.changed());
  }

  /** The routes under /ui/ on one http listener's app. */
  mount(app: FastifyInstance, opts: { secure: boolean }): void {
    mountDashboardRoutes(app, this, opts);
    // Streams end before the listener waits for its connections (Fastify's preClose), so a stop never waits on them.
    app.addHook('preClose', (done) => {
      this.live.close();
      done();
    });
  }

  async overview(range: Range): Promise<Overview> {
    return { ...overviewStats(this.deps.store.dashboard, range, this.#now()), queue: queueCounts(this.deps.scheduler), inbound: await inboundRates(), inboundSince: PROCESS_START };
  }

  liveUpdate(): LiveUpdate {
    const at = this.#now();
    return { at, minute: currentMinute(this.deps.store.dashboard, at), queue: queueCounts(this.deps.scheduler) };
  }

  /** A queued message's header section (up to 64 KiB); null once it left the queue, or when it cannot be read now. */
  async headers(id: string): Promise<string | null> {
    const msg = this.deps.scheduler.get(id);
    if (!msg) return null;
    try {
      return await readHeaderSection(this.deps.spool.openMessage(msg));
    } catch {
      // Delivered and removed between the look-up and the read: it is simply no longer there.
      return null;
    }
  }

  close(): void {
    this.live.close();
  }
}

/**
 * SPF, DKIM and DMARC pass rates from tern_inbound_results_total (src/
 * intake/inbound-metrics.ts): since the process started, as Prometheus
 * has them; a rate over time is Grafana's job. total is every checked
 * message (none and temperror included).
 */
async function inboundRates(): Promise<InboundRates> {
  const out = Object.fromEntries(INBOUND_CHECKS.map((c) => [c, { pass: 0, total: 0 }])) as InboundRates;
  const metric = registry.getSingleMetric('tern_inbound_results_total');
  if (!metric) return out;
  for (const v of (await metric.get()).values) {
    const rate = out[v.labels.check as keyof InboundRates];
    if (!rate) continue;
    rate.total += v.value;
    if (v.labels.result === 'pass') rate.pass += v.value;
  }
  return out;
}
