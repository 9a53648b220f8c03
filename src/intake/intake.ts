// Intake: the one entry for every new message (SMTP today; the HTTP API,
// bounces and forwards later). It assigns the queue id, prepends our
// Received header (RFC 5321 §4.4), streams the message into the spool and,
// once the spool says it is durable, hands it to the scheduler.

import type { Spool, SpoolWriter } from '../spool/spool.ts';
import type { Envelope, QueuedMessage, Recipient } from '../spool/types.ts';
import type { MailParams } from '../smtp/params.ts';
import type { Logger } from '../util/log.ts';
import { HeaderScanner } from './headers.ts';
import { SmtpError } from '../smtp/reply.ts';

export interface Trace {
  /** Client IP address. */
  ip: string;
  /** The EHLO/HELO argument. */
  helo?: string | undefined;
  /** e.g. "TLSv1.3 TLS_AES_256_GCM_SHA384", when the session was encrypted. */
  tls?: string | undefined;
  /** RFC 3848 protocol: SMTP, ESMTP, ESMTPS, ESMTPA, ESMTPSA, UTF8SMTP… */
  protocol: string;
  role?: string | undefined;
}

export interface NewMessage {
  sender: string;
  recipients: Recipient[];
  params: MailParams;
  trace: Trace;
}

export interface IntakeOptions {
  spool: Spool;
  hostname: string;
  /** Called after commit, with the durable message. */
  onQueued: (msg: QueuedMessage) => void;
  log: Logger;
  /** Received fields allowed before a message is refused as looping (RFC 5321 §6.3). */
  maxReceived: number;
}

const CRLF = Buffer.from('\r\n');

export class Intake {
  readonly #opts: IntakeOptions;
  constructor(opts: IntakeOptions) {
    this.#opts = opts;
  }

  begin(m: NewMessage): IncomingMessage {
    const id = this.#opts.spool.newId();
    const now = Date.now();
    const envelope: Envelope = {
      id,
      sender: m.sender,
      recipients: m.recipients,
      receivedAt: now,
      body: m.params.body,
      smtputf8: m.params.smtputf8,
      ret: m.params.ret,
      envid: m.params.envid,
      client: { ip: m.trace.ip, helo: m.trace.helo, role: m.trace.role, tls: m.trace.tls },
    };
    const writer = this.#opts.spool.create(envelope);
    const incoming = new IncomingMessage(writer, this.#opts);
    incoming.write(Buffer.from(receivedHeader(this.#opts.hostname, id, m, new Date(now)), 'utf8'));
    return incoming;
  }

  /**
   * A message made inside Tern (a DSN, later a forward): the same path as
   * mail from a client, from a buffer. Bounded in size by its builder.
   */
  async submit(m: NewMessage, message: Buffer): Promise<QueuedMessage> {
    const incoming = this.begin(m);
    incoming.write(message);
    return incoming.commit(message.length === 0 || message.subarray(-2).toString('latin1') === '\r\n');
  }
}

export class IncomingMessage {
  readonly #writer: SpoolWriter;
  readonly #opts: IntakeOptions;
  readonly #headers = new HeaderScanner();
  constructor(writer: SpoolWriter, opts: IntakeOptions) {
    this.#writer = writer;
    this.#opts = opts;
  }
  get id(): string {
    return this.#writer.envelope.id;
  }
  get envelope(): Envelope {
    return this.#writer.envelope;
  }
  /** Message bytes, in order; false means pause the source until onDrain. */
  write(chunk: Buffer): boolean {
    if (!this.#headers.done) this.#headers.push(chunk);
    return this.#writer.write(chunk);
  }
  onDrain(cb: () => void): void {
    this.#writer.onDrain(cb);
  }
  /**
   * Make it durable, then queue it. `endsWithLineBreak` false (possible with
   * BDAT) adds the CRLF that RFC 5322 §2.1 requires at the end.
   */
  async commit(endsWithLineBreak: boolean): Promise<QueuedMessage> {
    if (this.#headers.received > this.#opts.maxReceived) {
      // A loop: refusing now (rather than bouncing later) sends no backscatter;
      // the previous hop bounces to a sender it actually talked to.
      await this.#writer.abort();
      throw new SmtpError(554, '5.4.6', `Too many hops (${this.#headers.received} Received fields): mail loop?`);
    }
    if (!endsWithLineBreak) this.#writer.write(CRLF);
    const msg = await this.#writer.commit();
    this.#opts.onQueued(msg);
    return msg;
  }
  abort(): Promise<void> {
    return this.#writer.abort();
  }
}

/**
 * Received: from <helo> ([ip]) by <us> with <protocol> id <queue id>
 * [for <rcpt>]; <date>   (RFC 5321 §4.4, RFC 5322 §3.6.7)
 * "for" is only given for a single recipient, so Bcc recipients are not disclosed.
 */
export function receivedHeader(hostname: string, id: string, m: NewMessage, date: Date): string {
  const t = m.trace;
  const from = `from ${sanitize(t.helo ?? 'unknown')} ([${t.ip}])`;
  const tls = t.tls ? `\r\n\t(using ${sanitize(t.tls)})` : '';
  const forClause = m.recipients.length === 1 ? `\r\n\tfor <${sanitize(m.recipients[0]!.original)}>` : '';
  return `Received: ${from}\r\n\tby ${hostname} (Tern) with ${t.protocol} id ${id}${tls}${forClause};\r\n\t${rfc5322Date(date)}\r\n`;
}

/** Keep client-supplied text from breaking the header (no CR/LF, no comment nesting games). */
function sanitize(s: string): string {
  return s.replace(/[\r\n()\\]/g, '?').slice(0, 255);
}

export function rfc5322Date(d: Date): string {
  // toUTCString is RFC 7231 IMF-fixdate: same as RFC 5322 but with "GMT".
  return d.toUTCString().replace(/GMT$/, '+0000');
}
