// The composition root: builds every part from the config and joins them in
// the order mail flows (docs/architecture.md): listeners → session → policy → intake →
// spool → scheduler → delivery.

import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { TernConfig } from './config/types.ts';
import { Spool } from './spool/spool.ts';
import type { QueuedMessage } from './spool/types.ts';
import { IdleSweeper } from './server/idle-sweeper.ts';
import { Scheduler } from './queue/scheduler.ts';
import { MaildirTransport } from './delivery/maildir.ts';
import { DiscardTransport } from './delivery/discard.ts';
import { LmtpTransport, parseLmtpTarget } from './delivery/lmtp.ts';
import { DeliveryRouter } from './delivery/router.ts';
import { EventStream } from './events/events.ts';
import { logDeliveries } from './events/log.ts';
import { Intake } from './intake/intake.ts';
import { Directory } from './policy/directory.ts';
import { Policy, ipMatcher, type Check } from './policy/policy.ts';
import { RateCheck } from './policy/rate.ts';
import { SharedCounts } from './policy/shared-counts.ts';
import { DnsblCheck } from './policy/dnsbl.ts';
import { GreylistCheck } from './policy/greylist.ts';
import { loadPlugins } from './policy/plugins.ts';
import { ConnectionCounter, Listener, type ListenerDeps } from './server/listener.ts';
import { loadTls, ServerTls, type TlsMaterial } from './server/tls.ts';
import { loadConfig } from './config/load.ts';
import { createLogger, type Logger } from './util/log.ts';
import { ControlServer } from './server/control.ts';
import { createResolver, type Resolver } from './dns/resolver.ts';
import { RemoteDelivery, type RemoteDeliveryOptions } from './delivery/remote.ts';
import { Bouncer } from './bounce/bouncer.ts';
import { InboundVerifier } from './intake/authenticate.ts';
import { InboundCheck, InboundPolicy } from './policy/inbound.ts';
import { mailauthResolver } from './dns/mailauth-resolver.ts';
import { dkimKeySource, openConfiguredStore } from './store/open.ts';
import type { Store } from './store/store.ts';
import { TlsResults } from './tlsrpt/results.ts';
import { TlsReporter } from './tlsrpt/reporter.ts';
import { DrainTransport, parseDrainTarget } from './delivery/drain.ts';
import type { DeliveryReply } from './spool/types.ts';

/** What `tern queue drain` answers. */
export interface DrainSummary {
  to: string;
  /** Messages that left the queue (every recipient taken by the other node). */
  moved: number;
  /** Held messages: not drained (release or delete them first). */
  held: string[];
  /** Messages still here, with the last reply (the other node's refusal, or why it could not be reached). */
  notTaken: { id: string; reply: DeliveryReply | null }[];
}
import { MtaStsPolicies } from './delivery/mta-sts-policy.ts';
import { TlsPolicy } from './delivery/tls-policy.ts';
import { createSecureResolver } from './dns/secure.ts';
import { Authenticator } from './policy/auth.ts';
import { AuthThrottle } from './policy/auth-throttle.ts';
import { VerifiedLogins } from './policy/verified-logins.ts';
import { SendRate } from './policy/rate-limit.ts';
import { SubmissionCheck, senderFieldsCheck } from './policy/submission.ts';
import { TernBackend } from './policy/backend.ts';
import { listenError } from './util/startup-error.ts';
import type { SmtpListenerConfig } from './config/types.ts';
import { ApiServer } from './api/server.ts';
import { ApiKeyCache } from './api/keys.ts';
import { Sender } from './api/send.ts';
import { EventRecorder } from './api/events-store.ts';
import { Webhooks } from './webhooks/webhooks.ts';
import { Dashboard } from './dashboard/dashboard.ts';
import { mountStatic } from './dashboard/static.ts';
import { mountMtaSts, policyForHost } from './api/mta-sts.ts';
import { SuppressionList } from './suppress/list.ts';
import { suppressHardBounces } from './suppress/auto.ts';
import { ComplaintReader } from './suppress/complaints.ts';
import { countEvents } from './metrics/events.ts';
import { watchQueue } from './metrics/queue.ts';
import { watchSuppressions } from './metrics/suppressions.ts';

export interface TernOptions {
  log?: Logger;
  /** Tests that measure something other than durability may turn fsync off. */
  fsync?: boolean;
  /** Tests: a resolver of their own, and TLS options for outbound (e.g. a test CA). */
  resolver?: Resolver;
  outboundTls?: RemoteDeliveryOptions['tlsOptions'];
  /** Tests: the delays between webhook attempts (src/webhooks/retry.ts), short instead of minutes. */
  webhookRetrySchedule?: readonly number[];
}

export interface RunningTern {
  /** The configuration the server started with (a reload puts only the live keys of a new one in force: RELOADED_LIVE). */
  config: TernConfig;
  /** Bound ports by role, in listener order (ports configured as 0 are resolved). */
  ports: { role: string; address: string; port: number }[];
  spool: Spool;
  scheduler: Scheduler;
  /** Everything that happens to a message (src/events/): the log subscribes, and so may the API, metrics and tests. */
  events: EventStream;
  /** Resolves once every queue file found at start is read and handed to the scheduler. */
  recovered: Promise<void>;
  /**
   * Re-read the config file and the certificate (SIGHUP): the live keys take
   * effect for new connections and commands, established sessions go on.
   * A file that fails `config check`, or a certificate that does not load,
   * changes nothing and logs `reload failed`; resolves false then.
   */
  reload(): Promise<boolean>;
  /** Graceful stop: stop accepting, 421 idle sessions, let busy ones finish (up to drainMs), stop deliveries. */
  stop(drainMs?: number): Promise<void>;
}

/** How long a graceful stop waits for sessions in the middle of a message. */
export const DEFAULT_DRAIN_MS = 10_000;

export async function startTern(config: TernConfig, opts: TernOptions = {}): Promise<RunningTern> {
  const log = opts.log ?? createLogger(config.log.level);
  const fsync = opts.fsync ?? true;
  fs.mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  // Before the spool is touched: recovery would delete a running server's half-received messages.
  await ControlServer.refuseIfRunning(path.join(config.dataDir, 'control.sock'));

  const spool = new Spool({ dir: path.join(config.dataDir, 'spool'), fsync });
  spool.init();
  const maildir = new MaildirTransport({ root: path.join(config.dataDir, 'mailboxes'), hostname: config.hostname, fsync });
  const resolver = opts.resolver ?? createResolver(config.dns);
  // Plugins first: a broken one stops the start before anything is running.
  const plugins = await loadPlugins(config.plugins, { config, log, resolver });
  let bouncer: Bouncer | undefined;
  // Everything that happens to a message; the JSON log's delivery lines are its first subscriber.
  const events = new EventStream({ onError: (e, ev) => log.error('event subscriber failed', { type: ev.type, id: ev.queueId, error: e }) });
  logDeliveries(events, log);
  const store = openConfiguredStore(config);
  // Outbound transport security (docs/transport-security.md): recipient domains' DANE and MTA-STS policies, and TLS-RPT's counts.
  const tlsResults = config.tlsRpt.enabled ? new TlsResults({ store: store.tlsReports, log }) : undefined;
  const mtaSts = config.outbound.mtaSts
    ? new MtaStsPolicies({ store: store.mtaSts, resolver, log, port: config.outbound.mtaStsPort, ca: opts.outboundTls?.ca })
    : undefined;
  const tlsPolicy = new TlsPolicy({ dane: config.dns.dnssec ? createSecureResolver(config.dns) : undefined, sts: mtaSts });
  const remote = new RemoteDelivery({ config: config.outbound, resolver, log, tlsOptions: opts.outboundTls, tlsPolicy, tlsReports: tlsResults });
  const directory = new Directory(config.domains);
  // The suppression list (src/suppress/): asked before every remote attempt, fed by the API, hard bounces and ARF complaints.
  const suppressions = new SuppressionList(store.suppressions, { log, watch: store.onChange ? (fn) => store.onChange!('suppressions', fn) : undefined });
  if (config.suppression.hardBounces) suppressHardBounces(events, suppressions);
  const { complaintAddresses } = config.suppression;
  const complaints = config.suppression.complaints ? new ComplaintReader({ list: suppressions, events, store, directory, addresses: complaintAddresses, log }) : null;
  if (complaints) directory.setSinks(complaints.isSink);
  // Everything a reload replaces, swapped as one reference (assigned below, before any delivery or connection can read it).
  let live: LiveParts;
  const router = new DeliveryRouter({
    maildir: complaints ? complaints.wrap(maildir) : maildir,
    discard: complaints ? complaints.wrap(new DiscardTransport()) : new DiscardTransport(),
    localDelivery: (domain) => (live.discardDomains.has(domain) ? 'discard' : live.lmtpDomains.get(domain) ?? 'maildir'),
    // One transport (and pool of connections) per LMTP target, made when mail first goes there.
    lmtp: (spec) => {
      const target = parseLmtpTarget(spec);
      if ('problem' in target) throw new Error(target.problem); // the config check already refused it
      const o = config.outbound;
      const lmtp = new LmtpTransport({ target, heloName: o.heloName, timeouts: o.timeouts, reuseMs: o.connectionReuse, log, tlsOptions: opts.outboundTls });
      return { transport: complaints ? complaints.wrap(lmtp) : lmtp, close: () => lmtp.close() };
    },
    remote,
    perDestination: config.outbound.perDestination,
  });
  const scheduler = new Scheduler({
    spool,
    router,
    events,
    concurrency: config.outbound.concurrency,
    notify: (n) => bouncer!.notify(n),
    suppressions,
    retrySchedule: config.queue.retrySchedule,
    maxLifetime: config.queue.maxLifetime,
    delayWarning: config.queue.delayWarning,
    log,
  });
  // Prometheus (/metrics, src/metrics/): received, delivery results and times from the stream; the queue and the suppression list read at each scrape.
  const unwatchMetrics = [countEvents(events), watchQueue(scheduler), watchSuppressions(() => suppressions.size)];
  // The quick part of recovery (tmp/, the journal, listings); the queue files are read once everything is bound, below.
  const recovery = spool.beginRecovery();
  /** Every queue file read: queue commands wait for it, so a list is complete and every id is found. */
  let recovered: Promise<void> = Promise.resolve();

  const { inbound } = config;
  const intake = new Intake({
    spool,
    hostname: config.hostname,
    onQueued: (m) => {
      // Queued (with its source) before the scheduler may already report on it.
      for (let i = 0; i < m.envelope.recipients.length; i++) events.emit('queued', m, i);
      scheduler.add(m);
    },
    log,
    maxReceived: config.limits.maxReceived,
    dkim: dkimKeySource(config, store),
    authservId: inbound.authservId,
    inbound: inbound.enabled
      ? { verifier: new InboundVerifier({ authservId: inbound.authservId, resolve: mailauthResolver(resolver), timeout: inbound.timeout, log }) }
      : undefined,
  });
  // Several nodes (a shared store): rate limits and the AUTH throttle count every node's traffic (src/policy/shared-counts.ts).
  const counts = store.sharedCounts ? new SharedCounts(store.sharedCounts, { node: `${config.hostname}/${process.pid}/${randomUUID().slice(0, 8)}`, log }) : undefined;
  const shared: PolicyShared = {
    started: config, directory, intake, store, resolver, plugins, log, counts,
    throttle: new AuthThrottle({ shared: counts }), verified: new VerifiedLogins(), sendRate: new SendRate(Date.now, counts),
  };
  live = buildLive(config, shared, undefined);
  bouncer = new Bouncer({ hostname: config.hostname, intake, directory, spool, log, events });
  /**
   * `tern queue drain --to HOST:PORT` (src/delivery/drain.ts): from now on every recipient goes to that
   * node; everything queued is tried at once, and again while that moves more (a message that was being
   * delivered when the drain began is retried through it after). Held messages stay, and are named.
   */
  const drainQueue = async (to: string): Promise<DrainSummary> => {
    const target = parseDrainTarget(to);
    if (!target) throw new Error(`--to needs HOST:PORT (got "${to}")`);
    const o = config.outbound;
    const transport = new DrainTransport({ target, heloName: o.heloName, timeouts: o.timeouts, log, tlsOptions: opts.outboundTls });
    router.drain({ transport, close: () => transport.close(), limit: o.perDestination });
    const start = new Set(scheduler.list().map((m) => m.id));
    log.warn('queue drain', { to, messages: start.size });
    let left = start.size + 1;
    for (let round = 0; round < 5; round++) {
      scheduler.retry();
      await scheduler.idle();
      const now = scheduler.list().filter((m) => m.state !== 'held').length;
      if (now === 0 || now >= left) break;
      left = now;
    }
    const rest = scheduler.list();
    const summary: DrainSummary = {
      to,
      moved: [...start].filter((id) => !rest.some((m) => m.id === id)).length,
      held: rest.filter((m) => m.state === 'held').map((m) => m.id),
      notTaken: rest
        .filter((m) => m.state !== 'held')
        .map((m) => ({ id: m.id, reply: m.recipients.map((x) => x.lastReply).find((x) => x) ?? null })),
    };
    log.warn('queue drained', { to, moved: summary.moved, held: summary.held.length, notTaken: summary.notTaken.length });
    return summary;
  };
  // TLS-RPT (RFC 8460): the daily reports. Mailed ones go through intake as our own mail (fixed up and
  // DKIM-signed like submission's); a report to a local address is delivered like a DSN.
  const tlsReporter = tlsResults
    ? new TlsReporter({
        store: store.tlsReports,
        resolver,
        log,
        organization: config.tlsRpt.organization,
        contact: config.tlsRpt.contact,
        flush: () => tlsResults.flush(),
        submit: async ({ from, to, raw }) => {
          const recipients = to.flatMap((address) => directory.recipientsFor(address) ?? []);
          if (recipients.length === 0) throw new Error(`no such local address: ${to.join(', ')}`);
          await intake.submit({ sender: from, recipients, params: { smtputf8: false }, trace: { ip: '127.0.0.1', helo: 'localhost', protocol: 'local' }, submission: {} }, raw);
        },
      })
    : undefined;
  const serverTls = await ServerTls.load(config, log);
  const counter = new ConnectionCounter();
  // Listeners and sessions read these at each use: a reload's swap of `live`
  // (or a renewed certificate) reaches the next connection, command and handshake.
  const deps: ListenerDeps = {
    hostname: config.hostname,
    get limits() { return live.config.limits; },
    get backend() { return live.backend; },
    log,
    get secureContext() { return serverTls.context; },
    counter,
    get maxConnections() { return live.config.limits.connections; },
    get maxPerIp() { return live.config.limits.connectionsPerIp; },
    get proxyFrom() { return live.proxyFrom; },
    get proxyTimeout() { return live.config.edge.proxyTimeout; },
    sweeper: new IdleSweeper(Math.min(config.limits.timeouts.command, config.limits.timeouts.data)),
  };
  // Every event of every message, durably, for the API (before any mail can move).
  const recorder = new EventRecorder({ events, store, retentionMs: config.events.retention, log, enabled: config.events.enabled });
  // Webhooks: outbox rows commit with the recorder's events; POSTs start once everything is bound (webhooks.start below).
  const webhooks = new Webhooks({
    store: store.webhooks,
    log,
    timeoutMs: config.webhooks.timeout,
    retryForMs: config.webhooks.retryFor,
    concurrency: config.webhooks.concurrency,
    schedule: opts.webhookRetrySchedule,
    // A shared store (PostgreSQL) announces changes; its outbox is other nodes' too.
    shared: store.onChange !== undefined,
  });
  webhooks.attach(recorder);
  // A retried webhook event is read back from the events store (src/store/webhooks.ts): one that retention removes first is given up.
  if (config.events.retention < config.webhooks.retryFor) {
    log.warn('events.retention is shorter than webhooks.retryFor: webhook events still being retried when their event expires are given up', {
      retentionMs: config.events.retention,
      retryForMs: config.webhooks.retryFor,
    });
  }
  // Another node added, removed or disabled a webhook, or revoked a key: this node's outbox follows at once.
  store.onChange?.('webhooks', () => webhooks.changedElsewhere());
  store.onChange?.('api_keys', () => webhooks.changedElsewhere());
  // The dashboard (src/dashboard/): its aggregates commit with the recorder's events; its routes go on each http listener.
  const dashboardAuth = new Authenticator({ store, configUsers: [], throttle: shared.throttle, log, verified: shared.verified });
  // API keys by hash, for every http listener; the dashboard clears it when it makes or revokes one.
  const apiKeys = new ApiKeyCache(store);
  const dashboard = new Dashboard({
    store,
    apiKeys,
    scheduler,
    spool,
    throttle: shared.throttle,
    // Store users only: config-file users are never dashboard admins.
    authenticate: (ip, login, password) => dashboardAuth.authenticate(ip, login, password, 'dashboard'),
    suppressions,
    webhooks,
    flushEvents: () => recorder.drain(),
    minPasswordLength: () => live.config.submission.minPasswordLength,
    log,
  });
  dashboard.attach(recorder);
  const sender = new Sender({
    hostname: config.hostname,
    limits: () => live.config.limits,
    backend: () => live.backend,
    suppressed: (address) => suppressions.lookup(address) !== null,
  });
  const listeners = config.listeners.map((l) =>
    l.role === 'http'
      ? new ApiServer(l, { store, sender, log, tls: () => serverTls.material, messageSize: config.limits.messageSize, flushEvents: () => recorder.drain(), webhooks, suppressions: { list: suppressions }, apiKeys, metricsFrom: (ip) => live.metricsFrom(ip), mount: (app) => {
          dashboard.mount(app, { secure: l.tls === true });
          mountStatic(app);
          // The policy of config.mtaSts (read at start) for mta-sts.<each local domain> (live: a reload's new domains are served).
          mountMtaSts(app, (host) => policyForHost(host, live.config.domains.map((d) => d.name), live.config.mtaSts));
        } })
      : new Listener(l as SmtpListenerConfig, deps),
  );
  try {
    for (const [i, l] of listeners.entries()) await l.listen().catch((e: unknown) => Promise.reject(listenError(l.config, i, e)));
  } catch (e) {
    await Promise.all(listeners.map((l) => l.close().catch(() => {})));
    throw e;
  }
  const control = new ControlServer(path.join(config.dataDir, 'control.sock'), {
    'queue.list': () => scheduler.listing(),
    'queue.show': (r) => scheduler.show(String(r.id)),
    'queue.retry': (r) => scheduler.retry(typeof r.id === 'string' ? r.id : undefined),
    'queue.hold': (r) => scheduler.hold(String(r.id)),
    'queue.release': (r) => scheduler.release(String(r.id)),
    'queue.delete': (r) => scheduler.delete(String(r.id)),
    'queue.drain': (r) => drainQueue(String(r.to ?? '')),
  }, log, { ready: () => recovered });
  try {
    await control.listen();
  } catch (e) {
    await Promise.all(listeners.map((l) => l.close().catch(() => {})));
    throw e;
  }
  // Only now, with the bouncer in place and everything bound, may recovered
  // mail start moving: a start that fails (a port in use) delivers nothing.
  // Deferred mail (queue files) loads while the server already answers, a
  // batch per turn of the event loop: 100,000 files take seconds to read,
  // and neither the greeting nor new mail need wait (docs/queue-scale.md).
  for (const msg of recovery.journaled) scheduler.add(msg);
  webhooks.start();
  const recoveryStart = Date.now();
  let fromFiles = 0;
  const addRecovered = (msg: QueuedMessage) => {
    fromFiles++;
    scheduler.add(msg);
  };
  recovered = recovery.load(addRecovered, () => stopping !== null).then(
    () => {
      if (recovery.journaled.length || fromFiles || recovery.discarded || recovery.corrupt.length) {
        log.info('spool recovered', { messages: recovery.journaled.length + fromFiles, discardedPartial: recovery.discarded, corrupt: recovery.corrupt, ms: Date.now() - recoveryStart });
      }
    },
    (e: unknown) => log.error('spool recovery stopped', { error: e, unread: recovery.remaining }),
  );
  const ports = listeners.map((l) => ({ role: l.config.role, address: l.config.address, port: l.port }));
  log.info('tern started', { hostname: config.hostname, dataDir: config.dataDir, listeners: ports, selfSignedTls: serverTls.selfSigned, queued: scheduler.size, loading: recovery.remaining });
  // ACME renewals (certbot, lego) replace the files; the watch picks them up without a SIGHUP.
  serverTls.watch();

  /** One reload at a time: a second SIGHUP waits for the first and then reads the file again. */
  let reloading: Promise<boolean> = Promise.resolve(true);
  const reload = (): Promise<boolean> => (reloading = reloading.then(reloadNow));
  const reloadNow = async (): Promise<boolean> => {
    if (stopping) return false;
    const file = config.source;
    const previous = live.config;
    let next: TernConfig;
    let material: TlsMaterial;
    let parts: LiveParts;
    try {
      // The one validation (`tern config check`): a bad file changes nothing.
      next = file === undefined ? config : loadConfig(file);
      // dataDir needs a restart: the self-signed pair stays the one in the data directory in use.
      material = await loadTls({ ...next, dataDir: config.dataDir });
      parts = buildLive(next, shared, live);
    } catch (e) {
      log.error('reload failed', { file, error: e instanceof Error ? e.message : String(e) });
      return false;
    }
    if (stopping) return false;
    // From here to the end nothing awaits: the new parts go into force together.
    directory.reload(next.domains);
    live = parts;
    serverTls.use(material, next);
    log.info('reloaded', { file, changed: changedKeys(previous, next) });
    const restart = changedKeys(config, next).filter((k) => !isLiveKey(k));
    if (restart.length > 0) log.warn('reload: restart needed', { keys: restart });
    return true;
  };

  let stopping: Promise<void> | null = null;
  const stop = (drainMs = DEFAULT_DRAIN_MS): Promise<void> => {
    stopping ??= (async () => {
      log.info('tern stopping', { sessions: counter.sessions.size });
      serverTls.close();
      const closed = Promise.all(listeners.map((l) => l.close()));
      for (const s of [...counter.sessions]) s.shutdown();
      const deadline = Date.now() + drainMs;
      while (counter.sessions.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      for (const s of [...counter.sessions]) s.destroy();
      await closed;
      dashboard.close();
      await control.close();
      await tlsReporter?.close(); // it submits into intake and the spool
      await scheduler.stop();
      await spool.journal.close(); // done marks of the last deliveries
      await router.close();
      await recorder.close();
      webhooks.close(); // after the last events' outbox rows, before the store closes
      suppressions.close();
      mtaSts?.close();
      tlsResults?.close(); // the last counts, before the store closes
      counts?.close();
      for (const unwatch of unwatchMetrics) unwatch();
      store.close();
      // Group commit at work: journal records per fdatasync since start.
      log.info('tern stopped', { journal: spool.journal.stats });
    })();
    return stopping;
  };
  return { config, ports, spool, scheduler, events, recovered, reload, stop };
}

/**
 * What a reload (SIGHUP) puts in force without a restart, as config paths:
 * the certificate, who lives here, who is trusted, the limits, the users
 * from the file, the submission rules, the edge checks and the inbound
 * policy. Everything else (listeners, dataDir, hostname, dns, outbound,
 * queue, log, plugins, and the parts of a section named in RESTART_ONLY)
 * is read once at start: a reload that changes it logs that a restart is needed.
 */
export const RELOADED_LIVE = ['tls', 'domains', 'trustedNetworks', 'limits', 'users', 'submission', 'edge', 'inbound', 'mtaSts'] as const;
/** Inside the live sections, what is still built once at start (the intake's Received cap and inbound verifier). */
export const RESTART_ONLY = ['limits.maxReceived', 'inbound.enabled', 'inbound.authservId', 'inbound.timeout'] as const;

function isLiveKey(key: string): boolean {
  return !(RESTART_ONLY as readonly string[]).includes(key) && (RELOADED_LIVE as readonly string[]).includes(key.split('.')[0]!);
}

/** The top-level keys whose value differs, and for the live sections with restart-only parts, those parts. */
function changedKeys(a: TernConfig, b: TernConfig): string[] {
  const same = (x: unknown, y: unknown): boolean => JSON.stringify(x) === JSON.stringify(y);
  const keys = new Set([...Object.keys(a), ...Object.keys(b)].filter((k) => k !== 'source'));
  const out: string[] = [];
  for (const k of keys) {
    const x = (a as Record<string, unknown>)[k];
    const y = (b as Record<string, unknown>)[k];
    if (same(x, y)) continue;
    const parts = RESTART_ONLY.filter((p) => p.startsWith(`${k}.`));
    const changedParts = parts.filter((p) => !same((x as Record<string, unknown>)?.[p.slice(k.length + 1)], (y as Record<string, unknown>)?.[p.slice(k.length + 1)]));
    out.push(k, ...changedParts);
  }
  return out;
}

/** What every generation of the policy shares: state that must survive a reload (throttles, rate windows) and the parts built once. */
interface PolicyShared {
  /** The config at start: the intake's inbound verifier exists only if inbound was enabled then. */
  started: TernConfig;
  directory: Directory;
  intake: Intake;
  store: Store;
  resolver: Resolver;
  plugins: Check[];
  throttle: AuthThrottle;
  /** Counts shared with the other nodes, when the store is shared. */
  counts: SharedCounts | undefined;
  /** Logins checked recently (src/policy/verified-logins.ts), kept across reloads. */
  verified: VerifiedLogins;
  sendRate: SendRate;
  log: Logger;
}

/** One generation of the reloadable parts, built from one config. */
interface LiveParts {
  config: TernConfig;
  backend: TernBackend;
  discardDomains: Set<string>;
  /** Local domains delivered over LMTP, to their target (`domains[].delivery`). */
  lmtpDomains: Map<string, `lmtp:${string}`>;
  proxyFrom: (ip: string) => boolean;
  metricsFrom: (ip: string) => boolean;
  /** The edge checks and the config they were built from: kept (with their counters and caches) while it is unchanged. */
  edge: { checks: Check[]; key: string };
}

/**
 * Builds the backend and what it decides with from `config`. Throws nothing
 * it does not have to: everything here was validated by the config loader.
 * The edge checks are taken over from `previous` when their settings did not
 * change, so a reload does not reset rate windows or the DNSBL cache.
 */
function buildLive(config: TernConfig, shared: PolicyShared, previous: LiveParts | undefined): LiveParts {
  const { directory, intake, store, resolver, plugins, log } = shared;
  const { edge, submission, inbound } = config;
  const edgeKey = JSON.stringify([edge.rate, edge.dnsbl, edge.greylist, config.trustedNetworks]);
  const edgeParts = previous?.edge.key === edgeKey ? previous.edge : { checks: edgeChecks(config, { resolver, store, directory, log, counts: shared.counts }), key: edgeKey };
  const auth = new Authenticator({ store, configUsers: config.users, throttle: shared.throttle, log, verified: shared.verified });
  const submissionCheck = new SubmissionCheck({ ...submission, authConfigured: true, isTrusted: ipMatcher(config.trustedNetworks), rate: shared.sendRate });
  const policy = new Policy({
    directory,
    trustedNetworks: config.trustedNetworks,
    checks: [submissionCheck, ...edgeParts.checks, ...plugins],
    dataSteps: [senderFieldsCheck, ...(shared.started.inbound.enabled ? [new InboundCheck(new InboundPolicy(inbound), log)] : [])],
  });
  return {
    config,
    backend: new TernBackend({ hostname: shared.started.hostname, policy, intake, auth, authOnSmtp: submission.authOnSmtp, log }),
    discardDomains: new Set(config.domains.filter((d) => d.delivery === 'discard').map((d) => d.name.toLowerCase())),
    lmtpDomains: new Map(config.domains.flatMap((d) => (d.delivery?.startsWith('lmtp:') ? [[d.name.toLowerCase(), d.delivery as `lmtp:${string}`] as const] : []))),
    proxyFrom: ipMatcher(edge.proxyFrom),
    metricsFrom: ipMatcher(config.http.metricsFrom),
    edge: edgeParts,
  };
}

/**
 * The built-in edge checks, cheapest first: the rate limits need no I/O,
 * DNSBL lookups happen only for clients within their rate, greylisting last
 * (it needs the recipient). Each is left out when its config turns it off.
 */
function edgeChecks(
  config: TernConfig,
  deps: { resolver: Resolver; store: Store; directory: Directory; log: Logger; counts?: SharedCounts | undefined },
): Check[] {
  const { edge } = config;
  const isTrusted = ipMatcher(config.trustedNetworks);
  const checks: Check[] = [];
  if (edge.rate.connectionsPerMinute > 0 || edge.rate.messagesPerHour > 0) checks.push(new RateCheck({ ...edge.rate, isTrusted, shared: deps.counts }));
  if (edge.dnsbl.zones.length > 0) {
    checks.push(new DnsblCheck({ zones: edge.dnsbl.zones, cacheTtl: edge.dnsbl.cacheTtl, resolver: deps.resolver, log: deps.log, isTrusted }));
  }
  if (edge.greylist.enabled) {
    const { delay, expire, keep } = edge.greylist;
    checks.push(new GreylistCheck({ store: deps.store, delay, expire, keep, isTrusted, directory: deps.directory, log: deps.log }));
  }
  return checks;
}
