// Draining a node (`tern queue drain --to HOST:PORT`): while the router is
// in drain mode every recipient of every queued message goes to one other
// node over SMTP, through the scheduler like any delivery, so each one is
// marked done only after that node's 250 (written to the spool before the
// message is removed), and a crash halfway resumes where it stopped.
//
// The other node takes the mail as a relay: it must trust this node
// (its `trustedNetworks`) or serve the recipients' domains. Its refusal,
// temporary or permanent, never bounces anything here: the recipient stays
// queued (deferred, with the refusal as its last reply) and the drain
// reports it, because a misconfigured target is no reason to return mail.
// The message goes as stored (our trace fields included) with the original
// envelope: MAIL FROM, each recipient with its DSN parameters (ORCPT keeps
// the address the sender used), SMTPUTF8, 8BITMIME and REQUIRETLS.

import { ClientError, SmtpClient, type ClientOptions } from '../smtp/client.ts';
import { relayEnvelope } from './remote.ts';
import type { DeliveryJob, DeliveryResult, Relay, TlsUsed, Transport } from './types.ts';
import { fromClientReply, reply, replyLine } from './reply.ts';
import type { Logger } from '../util/log.ts';

export interface DrainTarget {
  host: string;
  port: number;
}

/** `HOST:PORT` (`[v6]:PORT` for IPv6); null when it is not one. */
export function parseDrainTarget(s: string): DrainTarget | null {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^\s:[\]]+)):(\d{1,5})$/.exec(s.trim());
  if (!m) return null;
  const port = Number(m[3]);
  if (port < 1 || port > 65535) return null;
  return { host: (m[1] ?? m[2])!, port };
}

export interface DrainTransportOptions {
  target: DrainTarget;
  heloName: string;
  timeouts: ClientOptions['timeouts'];
  log: Logger;
  /** Merged into the STARTTLS options (tests). */
  tlsOptions?: ClientOptions['tlsOptions'];
}

/** Connections kept open to the target between jobs. */
const MAX_IDLE = 8;

export class DrainTransport implements Transport {
  readonly name = 'drain';
  readonly #o: DrainTransportOptions;
  readonly #relay: Relay;
  readonly #idle: SmtpClient[] = [];
  #closed = false;

  constructor(opts: DrainTransportOptions) {
    this.#o = opts;
    this.#relay = { host: opts.target.host, ip: opts.target.host, port: opts.target.port };
  }

  get target(): DrainTarget {
    return this.#o.target;
  }

  async deliver(job: DeliveryJob): Promise<DeliveryResult[]> {
    const send = relayEnvelope(job);
    let client: SmtpClient;
    try {
      client = await this.#connect();
    } catch (e) {
      return job.indices.map(() => this.#refused(e, null));
    }
    const tls: TlsUsed | null = client.tls ? { version: client.tls.protocol, cipher: client.tls.cipher, verified: client.tls.authorized, peer: client.tls.peer } : null;
    try {
      const result = await client.send(send, job.open);
      const dsn = client.extensions.has('DSN');
      this.#release(client);
      return result.recipients.map((r): DeliveryResult => {
        if (r.code >= 200 && r.code < 300) {
          // The other node took our DSN parameters and reports from now on (RFC 3461 §5.2.1); one without DSN: we say we relayed.
          return { status: 'ok', reply: fromClientReply(r), relay: this.#relay, tls, successDsn: dsn ? 'none' : 'relayed' };
        }
        return this.#held(fromClientReply(r), tls);
      });
    } catch (e) {
      client.close();
      return job.indices.map(() => this.#refused(e, tls));
    }
  }

  /** A refusal by the target, whatever its code: the recipient stays queued here (see the top of the file). */
  #held(r: ReturnType<typeof fromClientReply>, tls: TlsUsed | null): DeliveryResult {
    const code = r.code >= 400 && r.code < 500 ? r.code : 451;
    return {
      status: 'tempfail',
      reply: reply(code, code === r.code ? r.enhanced ?? '4.0.0' : '4.4.0', `drain to ${this.#where()} refused: ${replyLine(r)}`),
      relay: this.#relay,
      tls,
      successDsn: 'none',
    };
  }

  #refused(e: unknown, tls: TlsUsed | null): DeliveryResult {
    if (e instanceof ClientError && e.reply) return this.#held(fromClientReply(e.reply), tls);
    const text = e instanceof Error ? e.message : String(e);
    this.#o.log.info('drain target failed', { target: this.#where(), error: text });
    return { status: 'tempfail', reply: reply(451, '4.4.1', `drain to ${this.#where()} failed: ${text}`), relay: null, tls: null, successDsn: 'none' };
  }

  #where(): string {
    const { host, port } = this.#o.target;
    return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
  }

  async #connect(): Promise<SmtpClient> {
    while (this.#idle.length > 0) {
      const c = this.#idle.pop()!;
      if (c.usable) return c;
      c.close();
    }
    const { host, port } = this.#o.target;
    return SmtpClient.connect({
      host,
      port,
      servername: host,
      heloName: this.#o.heloName,
      // Opportunistic (RFC 7435): the target is one of our own nodes, usually on a private network.
      tls: 'opportunistic',
      tlsOptions: { rejectUnauthorized: false, ...this.#o.tlsOptions },
      timeouts: this.#o.timeouts,
    });
  }

  #release(client: SmtpClient): void {
    if (this.#closed || !client.usable || this.#idle.length >= MAX_IDLE) {
      void client.quit();
      return;
    }
    this.#idle.push(client);
  }

  async close(): Promise<void> {
    this.#closed = true;
    await Promise.all(this.#idle.splice(0).map((c) => c.quit()));
  }
}
