// LMTP delivery (RFC 2033): `domains[].delivery: lmtp://HOST:PORT` or
// `lmtp:/path/to/socket` hands that domain's local mail to a delivery agent
// such as Dovecot. One transport per target; a job is one message to some of
// that target's recipients (one LMTP transaction), and the agent's reply per
// recipient after the final dot (§4.2) is that recipient's result: 2xx
// delivered, 5xx bounced, 4xx deferred.
//
// The dialogue is the SMTP client's (src/smtp/client.ts, `lmtp: true`): LHLO,
// PIPELINING when offered (RFC 2920), opportunistic STARTTLS over TCP when
// offered (RFC 3207; not verified, RFC 7435: the agent is usually on the same
// host or network). AUTH (RFC 4954) only when the target names credentials
// (`lmtp://user:password@host:port`): then TLS is required and the agent's
// certificate must verify (system CAs plus NODE_EXTRA_CA_CERTS), as for a
// smarthost, because the password goes to whoever answers. Most agents trust
// their network or socket permissions instead. Connections are kept for
// `reuseMs` and reused.
//
// Trouble before any per-recipient reply (no connection, a refused LHLO, a
// connection lost during the message) defers every recipient of the job: a
// local agent that is down or misconfigured is a reason to wait, not to
// bounce. A 5xx to MAIL or RCPT is the agent's answer and bounces.

import { ClientError, SmtpClient, type ClientOptions, type ClientReply, type SendEnvelope } from '../smtp/client.ts';
import { fromClientReply, reply } from './reply.ts';
import type { DeliveryJob, DeliveryResult, Relay, TlsUsed, Transport } from './types.ts';
import type { Logger } from '../util/log.ts';
import type { LmtpTarget } from '../config/domains.ts';

export { LMTP_DEFAULT_PORT, parseLmtpTarget, type LmtpTarget } from '../config/domains.ts';

export interface LmtpTransportOptions {
  target: LmtpTarget;
  /** The name we give in LHLO. */
  heloName: string;
  timeouts: ClientOptions['timeouts'];
  /** How long an idle connection is kept for the next job; 0 closes it after each. */
  reuseMs: number;
  log: Logger;
  /** Merged into the STARTTLS options (tests). */
  tlsOptions?: ClientOptions['tlsOptions'];
}

/** Idle connections kept per target: jobs in flight at once beyond this open and close their own. */
const MAX_IDLE = 4;

function tlsOf(client: SmtpClient): TlsUsed | null {
  const t = client.tls;
  return t ? { version: t.protocol, cipher: t.cipher, verified: t.authorized, peer: t.peer } : null;
}

export class LmtpTransport implements Transport {
  readonly name = 'lmtp';
  readonly #o: LmtpTransportOptions;
  readonly #relay: Relay;
  readonly #idle: { client: SmtpClient; timer: NodeJS.Timeout }[] = [];
  #closed = false;

  constructor(opts: LmtpTransportOptions) {
    this.#o = opts;
    const t = opts.target;
    this.#relay = 'path' in t ? { host: 'localhost', ip: t.path, port: 0 } : { host: t.host, ip: t.host, port: t.port };
  }

  async deliver(job: DeliveryJob): Promise<DeliveryResult[]> {
    const env = job.msg.envelope;
    const rcpts = job.indices.map((i) => env.recipients[i]!);
    const send: SendEnvelope = {
      from: env.sender,
      // The mailbox the directory resolved (an alias is already expanded); no DSN parameters: this is the
      // final delivery, so success notices are ours to send (RFC 3461 §5.2.3).
      recipients: rcpts.map((r) => ({ address: r.mailbox ? `${r.mailbox.localPart}@${r.mailbox.domain}` : r.address })),
      size: job.msg.size,
      eightBit: env.body === '8BITMIME',
      smtputf8: env.smtputf8 && (/[^\x00-\x7f]/.test(env.sender) || rcpts.some((r) => /[^\x00-\x7f]/.test(r.address))),
    };
    let client: SmtpClient;
    try {
      client = await this.#connect();
    } catch (e) {
      return job.indices.map(() => this.#failure(e, null));
    }
    const tls = tlsOf(client);
    try {
      const result = await client.send(send, job.open);
      this.#release(client);
      return result.recipients.map((r) => this.#result(r, tls));
    } catch (e) {
      client.close();
      return job.indices.map(() => this.#failure(e, tls));
    }
  }

  #result(r: ClientReply, tls: TlsUsed | null): DeliveryResult {
    const status = r.code >= 200 && r.code < 300 ? 'ok' : r.code >= 500 ? 'permfail' : 'tempfail';
    return { status, reply: fromClientReply(r), relay: this.#relay, tls, successDsn: status === 'ok' ? 'delivered' : 'none' };
  }

  /** Connection-level trouble: the agent's reply when it gave one, always a deferral. */
  #failure(e: unknown, tls: TlsUsed | null): DeliveryResult {
    const where = 'path' in this.#o.target ? this.#o.target.path : `${this.#o.target.host}:${this.#o.target.port}`;
    this.#o.log.info('lmtp delivery failed', { target: where, error: e instanceof Error ? e.message : String(e) });
    if (e instanceof ClientError && e.reply) {
      const r = fromClientReply(e.reply);
      // Its code as given when temporary; a permanent one is kept in the text but deferred (see the top of the file).
      const code = r.code >= 400 && r.code < 500 ? r.code : 451;
      const enhanced = code === r.code ? r.enhanced : '4.4.0';
      return { status: 'tempfail', reply: reply(code, enhanced, code === r.code ? r.text : `LMTP server ${where} said: ${r.code} ${r.text}`), relay: this.#relay, tls, successDsn: 'none' };
    }
    return { status: 'tempfail', reply: reply(451, '4.4.1', e instanceof Error ? e.message : String(e)), relay: null, tls: null, successDsn: 'none' };
  }

  async #connect(): Promise<SmtpClient> {
    while (this.#idle.length > 0) {
      const { client, timer } = this.#idle.pop()!;
      clearTimeout(timer);
      if (client.usable) return client;
      client.close();
    }
    const t = this.#o.target;
    const tcp = !('path' in t);
    const auth = tcp ? t.auth : undefined;
    return SmtpClient.connect({
      host: tcp ? t.host : 'localhost',
      port: tcp ? t.port : 0,
      path: tcp ? undefined : t.path,
      servername: tcp ? t.host : t.path,
      heloName: this.#o.heloName,
      lmtp: true,
      // Opportunistic over TCP (RFC 7435), required with a password; a unix socket never leaves the host.
      tls: auth ? 'required' : tcp ? 'opportunistic' : 'none',
      tlsOptions: { rejectUnauthorized: auth !== undefined, ...this.#o.tlsOptions },
      auth,
      timeouts: this.#o.timeouts,
    });
  }

  #release(client: SmtpClient): void {
    if (this.#closed || this.#o.reuseMs <= 0 || !client.usable || this.#idle.length >= MAX_IDLE) {
      void client.quit();
      return;
    }
    const entry = {
      client,
      timer: setTimeout(() => {
        const i = this.#idle.indexOf(entry);
        if (i >= 0) this.#idle.splice(i, 1);
        void client.quit();
      }, this.#o.reuseMs),
    };
    entry.timer.unref();
    this.#idle.push(entry);
  }

  /** QUIT every idle connection (shutdown). */
  async close(): Promise<void> {
    this.#closed = true;
    const all = this.#idle.splice(0);
    for (const e of all) clearTimeout(e.timer);
    await Promise.all(all.map((e) => e.client.quit()));
  }
}
