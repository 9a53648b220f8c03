// Remote delivery: one job is one message to one destination domain. Find
// the hosts (MX, RFC 5321 §5.1, or the configured smarthost), try them in
// order, and report one result per recipient. Connections are kept for a
// few seconds and reused for the next message to the same host.
//
// Which failures move on to the next host (§5.1: "the SMTP client SHOULD
// try at least two addresses"): no connection, a 4xx greeting, a TLS
// handshake or a dropped connection. A 5xx from a host that answered is its
// final word on those recipients; a 4xx inside a transaction defers.
//
// The recipient domain's TLS policy (tls-policy.ts: DANE, MTA-STS) decides
// per MX host whether TLS is required and how the session is judged; a
// session a policy refuses carries nothing, and mail that a policy protects
// waits (RFC 8461 §5.1, RFC 7672 §2.2) rather than going in clear text.
// Every negotiation is reported to TLS-RPT (RFC 8460) when a sink is set.

import type { OutboundConfig } from '../config/types.ts';
import type { Resolver } from '../dns/resolver.ts';
import { resolveMx } from './mx.ts';
import { ClientError, SmtpClient, type ClientOptions, type ClientReply, type SendEnvelope } from '../smtp/client.ts';
import type { DeliveryJob, DeliveryReply, DeliveryResult, Relay, TlsUsed, Transport } from './types.ts';
import { fromClientReply, reply, replyLine } from './reply.ts';
import type { Logger } from '../util/log.ts';
import { countTlsSession } from '../metrics/tls.ts';
import type { TLSSocket } from 'node:tls';
import type { HostTls, TlsPolicy, TlsVerdict } from './tls-policy.ts';
import type { TlsAttempt, TlsResultSink } from '../tlsrpt/types.ts';

interface Target {
  /** Name for logs, TLS SNI and DSNs (MX host, or smarthost). */
  name: string;
  address: string;
  port: number;
  tls: ClientOptions['tls'];
  auth?: { user: string; password: string } | undefined;
  /** MX targets: the recipient domain's TLS policy for this host. */
  policy?: { domain: string; host: HostTls } | undefined;
}

/** Set while a connection is made: what the policy check said (also when it is only reported). */
interface Verdicts {
  verdict: TlsVerdict;
  checked: boolean;
}

interface Idle {
  client: SmtpClient;
  timer: NodeJS.Timeout;
}


/**
 * Our own error as reply text. Replies reach logs and, in a DSN, the sender:
 * a system error's message names a local file (e.g. the queue file that
 * could not be read, wrapped as "reading the message failed: ENOENT: …,
 * open '/…'"), so any path it or its causes carry is left out.
 */
function errorText(e: unknown): string {
  let text = e instanceof Error ? e.message : String(e);
  for (let c: unknown = e, depth = 0; c instanceof Error && depth < 5; c = c.cause, depth++) {
    const { path, dest } = c as NodeJS.ErrnoException & { dest?: unknown };
    for (const p of [path, dest]) if (typeof p === 'string' && p !== '') text = text.split(p).join('[local file]');
  }
  return text;
}

/** A reply from the next hop, as the client parsed it (code and enhanced code, RFC 2034 §4). */
function resultFor(r: ClientReply, relay: Relay, dsnPassed: boolean, tls: TlsUsed | null): DeliveryResult {
  const status = r.code >= 200 && r.code < 300 ? 'ok' : r.code >= 500 ? 'permfail' : 'tempfail';
  return { status, reply: fromClientReply(r), relay, tls, successDsn: status === 'ok' && !dsnPassed ? 'relayed' : 'none' };
}

/** One of our own replies (no host answered): DNS, routing, connections that failed before a reply. */
function ours(status: 'tempfail' | 'permfail', r: DeliveryReply): DeliveryResult {
  return { status, reply: r, relay: null, tls: null, successDsn: 'none' };
}

function tlsOf(client: SmtpClient, policy?: TlsUsed['policy']): TlsUsed | null {
  const t = client.tls;
  if (!t) return null;
  // A session DANE accepted is authenticated even when the certificate does not verify against a CA (DANE-EE, RFC 7672 §3.1.1).
  return { version: t.protocol, cipher: t.cipher, verified: t.authorized || policy === 'dane', peer: t.peer, ...(policy ? { policy } : {}) };
}

/** A TLS policy refused the host, or nothing acceptable was left: a temporary failure (RFC 8461 §5.1), 4.7.5 (RFC 3463 §3.8). */
const tlsRefusal = (text: string): DeliveryResult => ours('tempfail', reply(451, '4.7.5', text));
/** RFC 8689 §5: REQUIRETLS cannot be honoured. */
const requireTlsRefusal = (text: string): DeliveryResult => ours('permfail', reply(550, '5.7.30', `REQUIRETLS: ${text}`));

export interface RemoteDeliveryOptions {
  config: OutboundConfig;
  resolver: Resolver;
  log: Logger;
  /** Overrides for tests (e.g. trusting a test CA). */
  tlsOptions?: ClientOptions['tlsOptions'];
  /** Recipient domains' TLS policies (DANE, MTA-STS); absent: opportunistic TLS only. */
  tlsPolicy?: TlsPolicy | undefined;
  /** TLS-RPT (RFC 8460): told about every TLS negotiation with an MX host. */
  tlsReports?: TlsResultSink | undefined;
}

/**
 * Remote delivery, as two transports sharing one pool of idle connections:
 * `mx` (a job is one message to one domain) and `smarthost` (a job is every
 * recipient of one message that the smarthost takes, whatever its domain).
 */
export class RemoteDelivery {
  readonly #o: RemoteDeliveryOptions;
  readonly #idle = new Map<string, Idle[]>();
  #closed = false;
  readonly mx: Transport = { name: 'mx', deliver: (job) => this.#deliver(job, false) };
  readonly smarthost: Transport = { name: 'smarthost', deliver: (job) => this.#deliver(job, true) };

  constructor(opts: RemoteDeliveryOptions) {
    this.#o = opts;
  }

  /** Whether mail for this (lower-case) domain goes through the smarthost. */
  viaSmarthost(domain: string): boolean {
    const sh = this.#o.config.smarthost;
    return !!sh && (!sh.domains || sh.domains.includes(domain));
  }

  async #deliver(job: DeliveryJob, smarthost: boolean): Promise<DeliveryResult[]> {
    const all = (r: DeliveryResult): DeliveryResult[] => job.indices.map(() => r);
    const env = job.msg.envelope;
    const requireTls = env.requireTls === true;
    let targets: Target[];
    let last = ours('tempfail', reply(451, '4.4.1', 'no host could be reached'));
    try {
      const first = env.recipients[job.indices[0]!]!.address;
      const domain = first.slice(first.lastIndexOf('@') + 1).toLowerCase();
      const routed = smarthost ? await this.#smarthostTargets() : await this.#mxTargets(domain, { requireTls, tlsOptional: env.tlsOptional === true });
      if ('fail' in routed) return all(routed.fail);
      targets = routed.targets;
      if (routed.refused) last = routed.refused;
      if (targets.length === 0) return all(last);
    } catch (e) {
      return all(ours('tempfail', reply(451, '4.4.3', `routing failed: ${errorText(e)}`)));
    }
    const send = relayEnvelope(job);
    for (const t of targets) {
      const relay: Relay = { host: t.name, ip: t.address, port: t.port };
      // RFC 8689 §4.2.1: only a host whose identity a policy (DANE, MTA-STS) vouches for; a smarthost's certificate is always verified.
      if (requireTls && t.policy && !(t.policy.host.authenticated && t.policy.host.enforce)) {
        last = requireTlsRefusal(`no DANE or MTA-STS policy authenticates ${t.name}`);
        continue;
      }
      let client: SmtpClient;
      try {
        client = await this.#connect(t, requireTls);
      } catch (e) {
        last = this.#failure(e, relay, null, t);
        this.#o.log.info('remote host failed', { id: env.id, host: `${t.name} [${t.address}]`, error: replyLine(last.reply) });
        if (last.status === 'permfail') return all(last);
        continue; // next address / next MX
      }
      // The certificate is recorded, verified or not (RFC 7435: opportunistic TLS does not verify).
      const tls = tlsOf(client, t.policy ? policyName(t.policy.host) : undefined);
      try {
        const result = await client.send(send, job.open);
        const dsnPassed = client.extensions.has('DSN');
        this.#release(t, client);
        return result.recipients.map((r) => resultFor(r, relay, dsnPassed, tls));
      } catch (e) {
        client.close();
        last = this.#failure(e, relay, tls, t);
        if (e instanceof ClientError && e.reply) return all(last); // the host answered: its word stands
        continue; // dropped or timed out mid-transaction: another host may do better
      }
    }
    // REQUIRETLS mail that found no acceptable TLS anywhere is returned (RFC 8689 §5), not retried for days.
    if (requireTls && last.status === 'tempfail' && last.reply.enhanced === '4.7.5') return all(requireTlsRefusal(last.reply.text));
    return all(last);
  }

  /** The host's reply when it gave one (then it is the relay of the result); otherwise ours, naming the host in the text. */
  #failure(e: unknown, relay: Relay, tls: TlsUsed | null, t?: Target): DeliveryResult {
    // The recipient's TLS policy refused the session (or the server offered no TLS where the policy requires it).
    if (e instanceof ClientError && !e.reply && (e.tlsFailure || (e.phase === 'starttls' && t?.policy?.host.enforce))) return tlsRefusal(errorText(e));
    if (e instanceof ClientError && e.reply) {
      // A 5xx greeting or AUTH refusal is that host's final answer.
      return { status: e.temporary ? 'tempfail' : 'permfail', reply: fromClientReply(e.reply), relay, tls, successDsn: 'none' };
    }
    // Without a reply: no connection, TLS or the connection failed (4.4.1, RFC 3463 §3.5), or a
    // refusal of ours that no retry changes (AUTH without TLS: 5.7.0, §3.8).
    if (e instanceof ClientError && !e.temporary) return ours('permfail', reply(554, '5.7.0', errorText(e)));
    return ours('tempfail', reply(451, '4.4.1', errorText(e)));
  }

  async #smarthostTargets(): Promise<{ targets: Target[]; refused?: DeliveryResult } | { fail: DeliveryResult }> {
    const sh = this.#o.config.smarthost!;
    const tls: ClientOptions['tls'] = sh.tls === 'implicit' ? 'implicit' : sh.tls === 'starttls' ? 'required' : 'none';
    const addresses = /^[\d.]+$|:/.test(sh.host) ? [sh.host] : [...(await this.#o.resolver.a(sh.host)), ...(await this.#o.resolver.aaaa(sh.host).catch(() => []))];
    if (addresses.length === 0) return { fail: ours('tempfail', reply(451, '4.4.4', `smarthost ${sh.host} has no address`)) };
    return { targets: addresses.map((address) => ({ name: sh.host, address, port: sh.port, tls, auth: sh.auth })) };
  }

  async #mxTargets(domain: string, demand: { requireTls: boolean; tlsOptional: boolean }): Promise<{ targets: Target[]; refused?: DeliveryResult } | { fail: DeliveryResult }> {
    const c = this.#o.config;
    const routing = await resolveMx(domain, this.#o.resolver, { maxHosts: c.maxMxHosts });
    if (routing.kind === 'fail') {
      return { fail: ours(routing.temporary ? 'tempfail' : 'permfail', reply(routing.temporary ? 451 : 550, routing.enhanced, routing.reason)) };
    }
    // RFC 5321 §5.1: if we are one of the MX hosts, only more preferred ones
    // may be used; none left means the mail would loop back to us.
    let hosts = routing.hosts;
    const self = hosts.find((h) => h.name === c.heloName.toLowerCase());
    if (self) {
      hosts = hosts.filter((h) => h.preference < self.preference);
      if (hosts.length === 0) return { fail: ours('permfail', reply(554, '5.4.6', `mail for ${domain} loops back to myself (${self.name} is its best MX)`)) };
    }
    const tls: ClientOptions['tls'] = c.tls;
    const policy = this.#o.tlsPolicy;
    if (!policy?.active) {
      if (demand.requireTls) return { fail: requireTlsRefusal(`no DANE or MTA-STS policy can authenticate the MX hosts of ${domain} (both are off)`) };
      return { targets: hosts.flatMap((h) => h.addresses.map((address) => ({ name: h.name, address, port: c.port, tls }))) };
    }
    const decided = await policy.decide(domain, hosts, demand);
    // A policy that could not be had has no strings to report (RFC 8460 §4.4 allows them to be absent).
    if (decided.policyFailure) this.#report({ policyDomain: domain, policy: { type: 'sts', strings: [], mxHosts: [] }, result: decided.policyFailure.failure, mxHost: '', receivingIp: '', reason: decided.policyFailure.reason });
    const targets: Target[] = [];
    let refused: DeliveryResult | undefined;
    for (const d of decided.hosts) {
      if ('fail' in d) {
        // A host the policy rules out (not named by MTA-STS, a TLSA lookup that failed): reported, and the next one is tried.
        refused ??= tlsRefusal(d.fail.reason);
        this.#report({ policyDomain: domain, policy: d.fail.report, result: d.fail.failure, mxHost: d.host.name, receivingIp: '', reason: d.fail.reason });
        continue;
      }
      for (const address of d.host.addresses) targets.push({ name: d.host.name, address, port: c.port, tls, policy: { domain, host: d.tls } });
    }
    if (targets.length === 0 && decided.noHosts) refused = tlsRefusal(decided.noHosts.reason);
    return { targets, refused };
  }

  #report(a: TlsAttempt): void {
    try {
      this.#o.tlsReports?.record(a);
    } catch (e) {
      this.#o.log.warn('tls report failed', { error: String(e) });
    }
  }

  async #connect(t: Target, requireTls = false): Promise<SmtpClient> {
    const key = poolKey(t);
    const idle = this.#idle.get(key);
    while (idle && idle.length > 0) {
      const { client, timer } = idle.pop()!;
      clearTimeout(timer);
      if (client.usable) return client;
      client.close();
    }
    const c = this.#o.config;
    const host = t.policy?.host;
    const checks: Verdicts = { verdict: null, checked: false };
    const judge = host?.verify;
    const base: ClientOptions = {
      host: t.address,
      port: t.port,
      servername: t.name,
      heloName: c.heloName,
      // A policy that applies and is enforced requires TLS whatever outbound.tls says; so does REQUIRETLS (RFC 8689 §4.2.1).
      tls: host?.mode === 'required' || (requireTls && t.tls !== 'implicit') ? 'required' : t.tls,
      // MX hosts: encryption without authentication (RFC 7435; verification
      // is what MTA-STS and DANE add). A smarthost gets our password, so its
      // certificate must verify.
      tlsOptions: { rejectUnauthorized: t.auth !== undefined || t.name === c.smarthost?.host, ...this.#o.tlsOptions },
      verifyTls: judge
        ? (socket: TLSSocket) => {
            checks.checked = true;
            checks.verdict = judge(socket);
            // A testing policy (or TLS-Required: No) only reports (RFC 8461 §5.2).
            return host.enforce ? checks.verdict : null;
          }
        : undefined,
      auth: t.auth,
      timeouts: c.timeouts,
    };
    try {
      const client = await SmtpClient.connect(base);
      // A new connection only: a reused one (above) is the same TLS session. The plaintext fallback below has none.
      if (client.tls) countTlsSession('outbound', client.tls.protocol);
      if (t.policy) {
        const result = !client.tls ? 'starttls-not-supported' : checks.verdict ? checks.verdict.failure : 'success';
        this.#report(attempt(t, result, checks.verdict?.reason, client.localAddress));
      }
      return client;
    } catch (e) {
      if (t.policy && e instanceof ClientError && !e.reply) {
        const failure = e.tlsFailure ?? (e.phase === 'starttls' ? 'validation-failure' : null);
        if (failure) this.#report(attempt(t, failure as TlsAttempt['result'], e.message, e.localAddress));
      }
      // RFC 7435 opportunistic security: a broken STARTTLS should not stop
      // mail where plaintext is allowed; try the same host without it.
      // Never where a policy is enforced or the message requires TLS.
      if (e instanceof ClientError && e.phase === 'starttls' && !e.tlsFailure && base.tls === 'opportunistic' && c.plaintextFallback && !host?.enforce && !requireTls) {
        this.#o.log.info('STARTTLS failed, retrying in plaintext', { host: t.name, address: t.address, error: e.message });
        return SmtpClient.connect({ ...base, tls: 'none', verifyTls: undefined });
      }
      throw e;
    }
  }

  #release(t: Target, client: SmtpClient): void {
    const keep = this.#o.config.connectionReuse;
    if (this.#closed || keep <= 0 || !client.usable) {
      void client.quit();
      return;
    }
    const key = poolKey(t);
    const list = this.#idle.get(key) ?? [];
    const entry: Idle = {
      client,
      timer: setTimeout(() => {
        const l = this.#idle.get(key);
        if (l) this.#idle.set(key, l.filter((x) => x !== entry));
        void client.quit();
      }, keep),
    };
    entry.timer.unref();
    list.push(entry);
    this.#idle.set(key, list);
  }

  async close(): Promise<void> {
    this.#closed = true;
    const all = [...this.#idle.values()].flat();
    this.#idle.clear();
    await Promise.all(
      all.map(({ client, timer }) => {
        clearTimeout(timer);
        return client.quit();
      }),
    );
  }
}

/** Idle connections are shared only between deliveries that need the same kind of session (an unverified one must not carry mail a policy protects). */
function poolKey(t: Target): string {
  const kind = t.policy?.host.reuseKey ?? '';
  return kind ? `${t.address}:${t.port}:${kind}` : `${t.address}:${t.port}`;
}

function policyName(h: HostTls): TlsUsed['policy'] {
  if (!h.verify) return undefined;
  if (h.report.type === 'tlsa') return 'dane';
  return h.enforce ? 'mta-sts' : 'mta-sts-testing';
}

function attempt(t: Target, result: TlsAttempt['result'], reason?: string, sendingIp?: string): TlsAttempt {
  return { policyDomain: t.policy!.domain, policy: t.policy!.host.report, result, mxHost: t.name, receivingIp: t.address, sendingIp, reason };
}

/**
 * The envelope to hand on to the next hop (an MX, the smarthost, another
 * node): the sender, each recipient with its DSN parameters, SMTPUTF8 only
 * when an address needs it (RFC 6531 §3.4), 8BITMIME, RET, ENVID, REQUIRETLS.
 */
export function relayEnvelope(job: DeliveryJob): SendEnvelope {
  const env = job.msg.envelope;
  const rcpts = job.indices.map((i) => env.recipients[i]!);
  return {
    from: env.sender,
    recipients: rcpts.map((r) => ({
      address: r.address,
      notify: r.notify,
      // RFC 3461 §4.2: keep the address the sender used when an alias changed it.
      orcpt: r.orcpt ?? (r.original !== r.address ? { type: 'rfc822', address: r.original } : undefined),
    })),
    size: job.msg.size,
    eightBit: env.body === '8BITMIME',
    smtputf8: env.smtputf8 && (/[^\x00-\x7f]/.test(env.sender) || rcpts.some((r) => /[^\x00-\x7f]/.test(r.address))),
    ret: env.ret,
    envid: env.envid,
    requireTls: env.requireTls === true,
  };
}
