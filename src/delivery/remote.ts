// Remote delivery: one job is one message to one destination domain. Find
// the hosts (MX, RFC 5321 §5.1, or the configured smarthost), try them in
// order, and report one result per recipient. Connections are kept for a
// few seconds and reused for the next message to the same host.
//
// Which failures move on to the next host (§5.1: "the SMTP client SHOULD
// try at least two addresses"): no connection, a 4xx greeting, a TLS
// handshake or a dropped connection. A 5xx from a host that answered is its
// final word on those recipients; a 4xx inside a transaction defers.

import type { OutboundConfig } from '../config/types.ts';
import type { Resolver } from '../dns/resolver.ts';
import { resolveMx } from './mx.ts';
import { ClientError, SmtpClient, type ClientOptions, type ClientReply, type SendEnvelope } from '../smtp/client.ts';
import type { DeliveryJob, DeliveryReply, DeliveryResult, Relay, TlsUsed, Transport } from './types.ts';
import { fromClientReply, reply, replyLine } from './reply.ts';
import type { Logger } from '../util/log.ts';
import { countTlsSession } from '../metrics/tls.ts';

interface Target {
  /** Name for logs, TLS SNI and DSNs (MX host, or smarthost). */
  name: string;
  address: string;
  port: number;
  tls: ClientOptions['tls'];
  auth?: { user: string; password: string } | undefined;
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

function tlsOf(client: SmtpClient): TlsUsed | null {
  const t = client.tls;
  return t ? { version: t.protocol, cipher: t.cipher, verified: t.authorized, peer: t.peer } : null;
}

export interface RemoteDeliveryOptions {
  config: OutboundConfig;
  resolver: Resolver;
  log: Logger;
  /** Overrides for tests (e.g. trusting a test CA). */
  tlsOptions?: ClientOptions['tlsOptions'];
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
    let targets: Target[];
    try {
      const first = env.recipients[job.indices[0]!]!.address;
      const routed = smarthost ? await this.#smarthostTargets() : await this.#mxTargets(first.slice(first.lastIndexOf('@') + 1).toLowerCase());
      if ('fail' in routed) return all(routed.fail);
      targets = routed.targets;
    } catch (e) {
      return all(ours('tempfail', reply(451, '4.4.3', `routing failed: ${errorText(e)}`)));
    }
    const rcpts = job.indices.map((i) => env.recipients[i]!);
    const send: SendEnvelope = {
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
    };
    let last = ours('tempfail', reply(451, '4.4.1', 'no host could be reached'));
    for (const t of targets) {
      const relay: Relay = { host: t.name, ip: t.address, port: t.port };
      let client: SmtpClient;
      try {
        client = await this.#connect(t);
      } catch (e) {
        last = this.#failure(e, relay, null);
        this.#o.log.info('remote host failed', { id: env.id, host: `${t.name} [${t.address}]`, error: replyLine(last.reply) });
        if (last.status === 'permfail') return all(last);
        continue; // next address / next MX
      }
      // The certificate is recorded, verified or not (RFC 7435: opportunistic TLS does not verify).
      const tls = tlsOf(client);
      try {
        const result = await client.send(send, job.open);
        const dsnPassed = client.extensions.has('DSN');
        this.#release(t, client);
        return result.recipients.map((r) => resultFor(r, relay, dsnPassed, tls));
      } catch (e) {
        client.close();
        last = this.#failure(e, relay, tls);
        if (e instanceof ClientError && e.reply) return all(last); // the host answered: its word stands
        continue; // dropped or timed out mid-transaction: another host may do better
      }
    }
    return all(last);
  }

  /** The host's reply when it gave one (then it is the relay of the result); otherwise ours, naming the host in the text. */
  #failure(e: unknown, relay: Relay, tls: TlsUsed | null): DeliveryResult {
    if (e instanceof ClientError && e.reply) {
      // A 5xx greeting or AUTH refusal is that host's final answer.
      return { status: e.temporary ? 'tempfail' : 'permfail', reply: fromClientReply(e.reply), relay, tls, successDsn: 'none' };
    }
    // Without a reply: no connection, TLS or the connection failed (4.4.1, RFC 3463 §3.5), or a
    // refusal of ours that no retry changes (AUTH without TLS: 5.7.0, §3.8).
    if (e instanceof ClientError && !e.temporary) return ours('permfail', reply(554, '5.7.0', errorText(e)));
    return ours('tempfail', reply(451, '4.4.1', errorText(e)));
  }

  async #smarthostTargets(): Promise<{ targets: Target[] } | { fail: DeliveryResult }> {
    const sh = this.#o.config.smarthost!;
    const tls: ClientOptions['tls'] = sh.tls === 'implicit' ? 'implicit' : sh.tls === 'starttls' ? 'required' : 'none';
    const addresses = /^[\d.]+$|:/.test(sh.host) ? [sh.host] : [...(await this.#o.resolver.a(sh.host)), ...(await this.#o.resolver.aaaa(sh.host).catch(() => []))];
    if (addresses.length === 0) return { fail: ours('tempfail', reply(451, '4.4.4', `smarthost ${sh.host} has no address`)) };
    return { targets: addresses.map((address) => ({ name: sh.host, address, port: sh.port, tls, auth: sh.auth })) };
  }

  async #mxTargets(domain: string): Promise<{ targets: Target[] } | { fail: DeliveryResult }> {
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
    return { targets: hosts.flatMap((h) => h.addresses.map((address) => ({ name: h.name, address, port: c.port, tls }))) };
  }

  async #connect(t: Target): Promise<SmtpClient> {
    const key = `${t.address}:${t.port}`;
    const idle = this.#idle.get(key);
    while (idle && idle.length > 0) {
      const { client, timer } = idle.pop()!;
      clearTimeout(timer);
      if (client.usable) return client;
      client.close();
    }
    const c = this.#o.config;
    const base: ClientOptions = {
      host: t.address,
      port: t.port,
      servername: t.name,
      heloName: c.heloName,
      tls: t.tls,
      // MX hosts: encryption without authentication (RFC 7435; verification
      // is what MTA-STS and DANE add). A smarthost gets our password, so its
      // certificate must verify.
      tlsOptions: { rejectUnauthorized: t.auth !== undefined || t.name === c.smarthost?.host, ...this.#o.tlsOptions },
      auth: t.auth,
      timeouts: c.timeouts,
    };
    try {
      const client = await SmtpClient.connect(base);
      // A new connection only: a reused one (above) is the same TLS session. The plaintext fallback below has none.
      if (client.tls) countTlsSession('outbound', client.tls.protocol);
      return client;
    } catch (e) {
      // RFC 7435 opportunistic security: a broken STARTTLS should not stop
      // mail where plaintext is allowed; try the same host without it.
      if (e instanceof ClientError && e.phase === 'starttls' && t.tls === 'opportunistic' && c.plaintextFallback) {
        this.#o.log.info('STARTTLS failed, retrying in plaintext', { host: t.name, address: t.address, error: e.message });
        return SmtpClient.connect({ ...base, tls: 'none' });
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
    const key = `${t.address}:${t.port}`;
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
