// The composition root: builds every part from the config and joins them in
// the order mail flows (docs/architecture.md): listeners → session → policy → intake →
// spool → scheduler → delivery.

import fs from 'node:fs';
import path from 'node:path';
import type { TernConfig } from './config/types.ts';
import { Spool } from './spool/spool.ts';
import type { QueuedMessage } from './spool/types.ts';
import { IdleSweeper } from './server/idle-sweeper.ts';
import { Scheduler } from './queue/scheduler.ts';
import { MaildirTransport } from './delivery/maildir.ts';
import { DiscardTransport } from './delivery/discard.ts';
import { DeliveryRouter } from './delivery/router.ts';
import { EventStream } from './events/events.ts';
import { logDeliveries } from './events/log.ts';
import { Intake } from './intake/intake.ts';
import { Directory } from './policy/directory.ts';
import { Policy, ipMatcher, type Check } from './policy/policy.ts';
import { RateCheck } from './policy/rate.ts';
import { DnsblCheck } from './policy/dnsbl.ts';
import { GreylistCheck } from './policy/greylist.ts';
import { loadPlugins } from './policy/plugins.ts';
import { ConnectionCounter, Listener } from './server/listener.ts';
import { loadTls } from './server/tls.ts';
import { createLogger, type Logger } from './util/log.ts';
import { ControlServer } from './server/control.ts';
import { createResolver, type Resolver } from './dns/resolver.ts';
import { RemoteDelivery, type RemoteDeliveryOptions } from './delivery/remote.ts';
import { Bouncer } from './bounce/bouncer.ts';
import { DkimKeys } from './intake/dkim.ts';
import { InboundVerifier } from './intake/authenticate.ts';
import { InboundCheck, InboundPolicy } from './policy/inbound.ts';
import { mailauthResolver } from './dns/mailauth-resolver.ts';
import { openStore } from './store/store.ts';
import { Authenticator } from './policy/auth.ts';
import { AuthThrottle } from './policy/auth-throttle.ts';
import { SendRate } from './policy/rate-limit.ts';
import { SubmissionCheck, senderFieldsCheck } from './policy/submission.ts';
import { TernBackend } from './policy/backend.ts';
import { listenError } from './util/startup-error.ts';

export interface TernOptions {
  log?: Logger;
  /** Tests that measure something other than durability may turn fsync off. */
  fsync?: boolean;
  /** Tests: a resolver of their own, and TLS options for outbound (e.g. a test CA). */
  resolver?: Resolver;
  outboundTls?: RemoteDeliveryOptions['tlsOptions'];
}

export interface RunningTern {
  config: TernConfig;
  /** Bound ports by role, in listener order (ports configured as 0 are resolved). */
  ports: { role: string; address: string; port: number }[];
  spool: Spool;
  scheduler: Scheduler;
  /** Everything that happens to a message (src/events/): the log subscribes, and so may the API, metrics and tests. */
  events: EventStream;
  /** Resolves once every queue file found at start is read and handed to the scheduler. */
  recovered: Promise<void>;
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
  const remote = new RemoteDelivery({ config: config.outbound, resolver, log, tlsOptions: opts.outboundTls });
  let bouncer: Bouncer | undefined;
  // Everything that happens to a message; the JSON log's delivery lines are its first subscriber.
  const events = new EventStream({ onError: (e, ev) => log.error('event subscriber failed', { type: ev.type, id: ev.queueId, error: e }) });
  logDeliveries(events, log);
  const discardDomains = new Set(config.domains.filter((d) => d.delivery === 'discard').map((d) => d.name.toLowerCase()));
  const router = new DeliveryRouter({
    maildir,
    discard: new DiscardTransport(),
    localDelivery: (domain) => (discardDomains.has(domain) ? 'discard' : 'maildir'),
    remote,
    perDestination: config.outbound.perDestination,
  });
  const scheduler = new Scheduler({
    spool,
    router,
    events,
    concurrency: config.outbound.concurrency,
    notify: (n) => bouncer!.notify(n),
    retrySchedule: config.queue.retrySchedule,
    maxLifetime: config.queue.maxLifetime,
    delayWarning: config.queue.delayWarning,
    log,
  });
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
    dkim: new DkimKeys(config.dataDir),
    authservId: inbound.authservId,
    inbound: inbound.enabled
      ? { verifier: new InboundVerifier({ authservId: inbound.authservId, resolve: mailauthResolver(resolver), timeout: inbound.timeout, log }) }
      : undefined,
  });
  const store = openStore(config.dataDir);
  const auth = new Authenticator({ store, configUsers: config.users, throttle: new AuthThrottle(), log });
  const directory = new Directory(config.domains);
  const { submission } = config;
  const submissionCheck = new SubmissionCheck({ ...submission, authConfigured: true, isTrusted: ipMatcher(config.trustedNetworks), rate: new SendRate() });
  const policy = new Policy({
    directory,
    trustedNetworks: config.trustedNetworks,
    checks: [submissionCheck, ...edgeChecks(config, { resolver, store, directory, log }), ...plugins],
    dataSteps: [senderFieldsCheck, ...(inbound.enabled ? [new InboundCheck(new InboundPolicy(inbound), log)] : [])],
  });
  const backend = new TernBackend({ hostname: config.hostname, policy, intake, auth, authOnSmtp: submission.authOnSmtp, log });
  bouncer = new Bouncer({ hostname: config.hostname, intake, directory, spool, log, events });
  const tlsMaterial = await loadTls(config);
  const counter = new ConnectionCounter();
  const deps = {
    hostname: config.hostname,
    limits: config.limits,
    backend,
    log,
    secureContext: tlsMaterial.context,
    counter,
    maxConnections: config.limits.connections,
    maxPerIp: config.limits.connectionsPerIp,
    proxyFrom: ipMatcher(config.edge.proxyFrom),
    proxyTimeout: config.edge.proxyTimeout,
    sweeper: new IdleSweeper(Math.min(config.limits.timeouts.command, config.limits.timeouts.data)),
  };
  const listeners = config.listeners.map((l) => new Listener(l, deps));
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
  log.info('tern started', { hostname: config.hostname, dataDir: config.dataDir, listeners: ports, selfSignedTls: tlsMaterial.selfSigned, queued: scheduler.size, loading: recovery.remaining });

  let stopping: Promise<void> | null = null;
  const stop = (drainMs = DEFAULT_DRAIN_MS): Promise<void> => {
    stopping ??= (async () => {
      log.info('tern stopping', { sessions: counter.sessions.size });
      const closed = Promise.all(listeners.map((l) => l.close()));
      for (const s of [...counter.sessions]) s.shutdown();
      const deadline = Date.now() + drainMs;
      while (counter.sessions.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      for (const s of [...counter.sessions]) s.destroy();
      await closed;
      await control.close();
      await scheduler.stop();
      await spool.journal.close(); // done marks of the last deliveries
      await router.close();
      store.close();
      // Group commit at work: journal records per fdatasync since start.
      log.info('tern stopped', { journal: spool.journal.stats });
    })();
    return stopping;
  };
  return { config, ports, spool, scheduler, events, recovered, stop };
}

/**
 * The built-in edge checks, cheapest first: the rate limits need no I/O,
 * DNSBL lookups happen only for clients within their rate, greylisting last
 * (it needs the recipient). Each is left out when its config turns it off.
 */
function edgeChecks(
  config: TernConfig,
  deps: { resolver: Resolver; store: ReturnType<typeof openStore>; directory: Directory; log: Logger },
): Check[] {
  const { edge } = config;
  const isTrusted = ipMatcher(config.trustedNetworks);
  const checks: Check[] = [];
  if (edge.rate.connectionsPerMinute > 0 || edge.rate.messagesPerHour > 0) checks.push(new RateCheck({ ...edge.rate, isTrusted }));
  if (edge.dnsbl.zones.length > 0) {
    checks.push(new DnsblCheck({ zones: edge.dnsbl.zones, cacheTtl: edge.dnsbl.cacheTtl, resolver: deps.resolver, log: deps.log, isTrusted }));
  }
  if (edge.greylist.enabled) {
    const { delay, expire, keep } = edge.greylist;
    checks.push(new GreylistCheck({ store: deps.store, delay, expire, keep, isTrusted, directory: deps.directory, log: deps.log }));
  }
  return checks;
}
