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
import { DkimSigner, type DkimKeys } from './dkim.ts';
import { mayUseAddress } from '../policy/senders.ts';

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
  /** The authenticated user (RFC 4954), recorded in Received. */
  user?: string | undefined;
}

export interface NewMessage {
  sender: string;
  recipients: Recipient[];
  params: MailParams;
  trace: Trace;
  /**
   * Mail from our own users (authenticated submission, or a trusted
   * network): fixed up per RFC 6409 §8 and DKIM-signed. `sendAs` set means
   * From: must be one of these addresses (RFC 6409 §8.1 lets the MSA check).
   */
  submission?: { user?: string | undefined; sendAs?: string[] | undefined } | undefined;
}

export interface IntakeOptions {
  spool: Spool;
  hostname: string;
  /** Called after commit, with the durable message. */
  onQueued: (msg: QueuedMessage) => void;
  log: Logger;
  /** Received fields allowed before a message is refused as looping (RFC 5321 §6.3). */
  maxReceived: number;
  /** Signing keys by domain; absent: nothing is signed. */
  dkim?: DkimKeys | undefined;
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
    const incoming = new IncomingMessage(writer, this.#opts, m.submission);
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

/** Header section bytes kept for the DKIM signer while the From domain is not known yet. */
const MAX_HELD_HEADER = 256 * 1024;

export class IncomingMessage {
  readonly #writer: SpoolWriter;
  readonly #opts: IntakeOptions;
  readonly #headers = new HeaderScanner();
  readonly #submission: NewMessage['submission'];
  /** Submission: header chunks held for the signer until the header section ends. */
  #held: Buffer[] | null = null;
  #heldBytes = 0;
  #signer: DkimSigner | null = null;
  #fixups: string | null = null;

  constructor(writer: SpoolWriter, opts: IntakeOptions, submission?: NewMessage['submission']) {
    this.#writer = writer;
    this.#opts = opts;
    this.#submission = submission;
    if (submission && opts.dkim) this.#held = [];
  }
  get id(): string {
    return this.#writer.envelope.id;
  }
  get envelope(): Envelope {
    return this.#writer.envelope;
  }
  /** Message bytes, in order; false means pause the source until onDrain. */
  write(chunk: Buffer): boolean {
    if (!this.#headers.done) {
      this.#headers.push(chunk);
      if (this.#held) {
        this.#held.push(chunk);
        this.#heldBytes += chunk.length;
        if (this.#headers.done) this.#startSigning();
        else if (this.#heldBytes > MAX_HELD_HEADER) this.#held = null; // absurd header: not signed
      }
    } else {
      this.#signer?.write(chunk);
    }
    return this.#writer.write(chunk);
  }
  onDrain(cb: () => void): void {
    this.#writer.onDrain(cb);
  }

  /** The header section is complete: decide the fix-ups and whether (and with which keys) to sign. */
  #startSigning(): void {
    const held = this.#held!;
    this.#held = null;
    this.#fixups = this.#fixupFields();
    const domain = fromDomain(this.#headers.get('from')[0] ?? '') ?? this.envelope.sender.split('@')[1];
    const keys = domain ? this.#opts.dkim!.forDomain(domain) : [];
    if (keys.length === 0) return;
    this.#signer = new DkimSigner(keys);
    // The signer sees exactly what is delivered after its own field: the fix-ups, then the stored bytes.
    if (this.#fixups) this.#signer.write(Buffer.from(this.#fixups, 'utf8'));
    for (const c of held) this.#signer.write(c);
  }

  /** RFC 6409 §8.2-8.3: a submitted message without Date or Message-ID gets them. */
  #fixupFields(): string {
    let out = '';
    if (!this.#headers.fields.has('date')) out += `Date: ${rfc5322Date(new Date(this.envelope.receivedAt))}\r\n`;
    if (!this.#headers.fields.has('message-id')) out += `Message-ID: <${this.id}.${Date.now().toString(36)}@${this.#opts.hostname}>\r\n`;
    return out;
  }

  /**
   * Make it durable, then queue it. `endsWithLineBreak` false (possible with
   * BDAT) adds the CRLF that RFC 5322 §2.1 requires at the end.
   */
  async commit(endsWithLineBreak: boolean): Promise<QueuedMessage> {
    try {
      if (this.#headers.received > this.#opts.maxReceived) {
        // A loop: refusing now (rather than bouncing later) sends no backscatter;
        // the previous hop bounces to a sender it actually talked to.
        throw new SmtpError(554, '5.4.6', `Too many hops (${this.#headers.received} Received fields): mail loop?`);
      }
      const sendAs = this.#submission?.sendAs;
      if (sendAs) {
        // RFC 6409 §8.1 / §6.1: the MSA may refuse a From: the user may not use.
        const froms = this.#headers.get('from').flatMap(addressesIn);
        const bad = froms.find((a) => !mayUseAddress(a, sendAs));
        if (froms.length === 0) throw new SmtpError(550, '5.7.1', 'Message has no From: address');
        if (bad) throw new SmtpError(550, '5.7.1', `Sender address <${bad}> in From: is not yours to use`);
      }
    } catch (e) {
      await this.#writer.abort();
      throw e;
    }
    if (this.#submission) {
      // A message without a body never ended its header section: decide now.
      if (this.#held) this.#startSigning();
      this.#fixups ??= this.#fixupFields();
    }
    if (!endsWithLineBreak) {
      this.#writer.write(CRLF);
      this.#signer?.write(CRLF);
    }
    const signature = this.#signer ? await this.#signer.finish() : '';
    if (this.#signer?.errors.length) this.#opts.log.warn('dkim signing problem', { id: this.id, errors: this.#signer.errors });
    const msg = await this.#writer.commit(signature + (this.#fixups ?? '') || undefined);
    this.#opts.onQueued(msg);
    return msg;
  }
  abort(): Promise<void> {
    return this.#writer.abort();
  }
}

/**
 * The addr-specs in an address-list field value (RFC 5322 §3.4): every
 * mailbox of the list, whether "Name <addr>" or a bare addr; display names,
 * quoted strings, comments and group labels are not addresses.
 */
export function addressesIn(value: string): string[] {
  const clean = value
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\((?:[^()\\]|\\.)*\)/g, ' ');
  const out: string[] = [];
  for (let part of clean.split(/[,;]/)) {
    part = part.replace(/^[^<@]*:/, ''); // "group-name:" opens a group
    const angle = /<([^<>]*)>/.exec(part);
    const addr = (angle ? angle[1]! : part).trim();
    if (addr) out.push(addr.toLowerCase());
  }
  return out;
}

function fromDomain(value: string): string | undefined {
  const a = addressesIn(value)[0];
  return a ? a.slice(a.lastIndexOf('@') + 1) : undefined;
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
  const auth = t.user ? `\r\n\t(authenticated as ${sanitize(t.user)})` : '';
  const forClause = m.recipients.length === 1 ? `\r\n\tfor <${sanitize(m.recipients[0]!.original)}>` : '';
  return `Received: ${from}\r\n\tby ${hostname} (Tern) with ${t.protocol} id ${id}${tls}${auth}${forClause};\r\n\t${rfc5322Date(date)}\r\n`;
}

/** Keep client-supplied text from breaking the header (no CR/LF, no comment nesting games). */
function sanitize(s: string): string {
  return s.replace(/[\r\n()\\]/g, '?').slice(0, 255);
}

export function rfc5322Date(d: Date): string {
  // toUTCString is RFC 7231 IMF-fixdate: same as RFC 5322 but with "GMT".
  return d.toUTCString().replace(/GMT$/, '+0000');
}
