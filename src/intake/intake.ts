// Intake: the one entry for every new message (SMTP today; the HTTP API,
// bounces and forwards later). It assigns the queue id, prepends our
// Received header (RFC 5321 §4.4), streams the message into the spool and,
// once the spool says it is durable, hands it to the scheduler.
//
// Every message loses Authentication-Results fields that claim our
// authserv-id (RFC 8601 §5, ar-filter.ts). Mail from outside (NewMessage.
// authenticate) is also checked as it streams (SPF, DKIM, DMARC, ARC,
// iprev: authenticate.ts); at commit the inbound policy may refuse it or
// send it to Junk, and its Authentication-Results field is prepended.

import type { Spool, SpoolWriter } from '../spool/spool.ts';
import type { Envelope, QueuedMessage, Recipient } from '../spool/types.ts';
import type { MailParams } from '../smtp/params.ts';
import type { Logger } from '../util/log.ts';
import { HeaderScanner, MAX_ORIGINATOR_BYTES } from './headers.ts';
import { parseAddressList } from '../smtp/address-list.ts';
import { SmtpError } from '../smtp/reply.ts';
import { DkimSigner, type DkimKeys } from './dkim.ts';
import { originatorError } from '../policy/senders.ts';
import { AuthResultsFilter } from './ar-filter.ts';
import type { ArcSealKey, InboundVerifier, Verification } from './authenticate.ts';
import { JUNK_FOLDER, type InboundPolicy } from '../policy/inbound.ts';
import { CHECKS_DISABLED, checkSender } from '../bounce/backscatter.ts';

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
  /**
   * Mail from outside (the MX role: not authenticated, not a trusted
   * network): run the inbound checks and apply the inbound policy.
   */
  authenticate?: boolean | undefined;
}

/** Sender authentication of mail from outside, and what to do with the results. */
export interface InboundChecks {
  verifier: InboundVerifier;
  policy: InboundPolicy;
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
  /** Our RFC 8601 authserv-id: Authentication-Results fields claiming it are removed. Default: hostname. */
  authservId?: string | undefined;
  /** Absent: no inbound checks (NewMessage.authenticate is ignored). */
  inbound?: InboundChecks | undefined;
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
      // Mail from outside: no DSN to its sender unless verified (backscatter.ts); #checkInbound records the result when the checks run.
      outside: m.authenticate ? CHECKS_DISABLED : undefined,
      client: { ip: m.trace.ip, helo: m.trace.helo, role: m.trace.role, tls: m.trace.tls },
    };
    const writer = this.#opts.spool.create(envelope);
    const inbound = m.authenticate ? this.#opts.inbound : undefined;
    const seal = inbound ? this.#arcKey(id, m.recipients) : undefined;
    const verification = inbound?.verifier.begin({ ip: m.trace.ip, helo: m.trace.helo, sender: m.sender }, seal);
    const incoming = new IncomingMessage(writer, this.#opts, m.submission, inbound && verification ? { policy: inbound.policy, verification } : undefined);
    // Our Received field is not part of what the verifier checks (see authenticate.ts).
    incoming.writeOwnField(Buffer.from(receivedHeader(this.#opts.hostname, id, m, new Date(now)), 'utf8'));
    return incoming;
  }

  /**
   * Mail from outside that an alias of ours forwards to a remote address is
   * ARC-sealed (RFC 8617), so the next hop can trust our results: with an
   * rsa key (ed25519 ARC is not widely verified yet) of the alias's own
   * domain. Without one the copy goes out unsealed, and the log says so.
   */
  #arcKey(id: string, recipients: Recipient[]): ArcSealKey | undefined {
    const forwarded = recipients.find((r) => !r.mailbox && r.original.toLowerCase() !== r.address.toLowerCase());
    if (!forwarded) return undefined;
    const domain = forwarded.original.slice(forwarded.original.lastIndexOf('@') + 1).toLowerCase();
    const key = this.#opts.dkim?.forDomain(domain).find((k) => k.algorithm === 'rsa-sha256');
    if (!key) {
      this.#opts.log.info('forwarded mail not ARC-sealed: no rsa DKIM key', { id, domain });
      return undefined;
    }
    return { domain: key.domain, selector: key.selector, privateKey: key.privateKey };
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
/**
 * The verifier keeps the whole header section (DKIM needs it at the end), so
 * mail from outside with a larger one is refused: the checks must not be
 * skippable by padding the header (Postfix's header_size_limit is 100 KiB).
 */
export const MAX_VERIFIED_HEADER = 256 * 1024;

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
  readonly #filter: AuthResultsFilter;
  /** Mail from outside: the running checks and the policy that reads them. */
  readonly #inbound: { policy: InboundPolicy; verification: Verification } | undefined;
  /** Header section octets fed to the verifier so far; past MAX_VERIFIED_HEADER it is stopped. */
  #verifiedHeader = 0;
  #headerTooBig = false;
  /** The commit, or the abort: set by whichever comes first. */
  #ending: Promise<unknown> | null = null;

  constructor(writer: SpoolWriter, opts: IntakeOptions, submission?: NewMessage['submission'], inbound?: { policy: InboundPolicy; verification: Verification }) {
    this.#writer = writer;
    this.#opts = opts;
    this.#submission = submission;
    this.#inbound = inbound;
    this.#filter = new AuthResultsFilter(opts.authservId ?? opts.hostname);
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
    const more = this.writeTrace(chunk);
    this.#verify(chunk);
    return more;
  }

  /**
   * A whole header field of ours (the Received field, first): stored, not
   * verified, and not run through the Authentication-Results filter, which
   * only has client fields to look at.
   */
  writeOwnField(field: Buffer): boolean {
    return this.#store(field);
  }

  /** Client bytes past the A-R filter into the store (not the verifier). */
  writeTrace(chunk: Buffer): boolean {
    let more = true;
    for (const part of this.#filter.push(chunk)) more = this.#store(part);
    return more;
  }

  #verify(chunk: Buffer): void {
    const v = this.#inbound?.verification;
    if (!v || this.#headerTooBig) return;
    if (!this.#headers.done) {
      // Counted while the header section goes on (the chunk that ends it is not: at most one chunk more).
      this.#verifiedHeader += chunk.length;
      if (this.#verifiedHeader > MAX_VERIFIED_HEADER) {
        this.#headerTooBig = true;
        v.abort();
        return;
      }
    }
    v.write(chunk);
  }

  #store(chunk: Buffer): boolean {
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
  commit(endsWithLineBreak: boolean): Promise<QueuedMessage> {
    // One of commit() and abort() decides, as in SpoolWriter: an abort that
    // comes during the commit (the client reset after its final dot) waits
    // for it instead of pulling the message out from under it.
    if (this.#ending) return Promise.reject(new Error('IncomingMessage: commit after commit or abort'));
    // Whatever fails (a check, the inbound policy, signing, the spool), the
    // spool writer is left aborted, never open.
    const commit = this.#commit(endsWithLineBreak).catch(async (e: unknown) => {
      await this.#discard();
      throw e;
    });
    this.#ending = commit;
    return commit;
  }

  async #commit(endsWithLineBreak: boolean): Promise<QueuedMessage> {
    // Whatever the filter still holds (a message that ended inside its header section).
    for (const part of this.#filter.end()) this.#store(part);
    try {
      if (this.#headerTooBig) {
        throw new SmtpError(552, '5.3.4', `Message header section too large (limit ${MAX_VERIFIED_HEADER} octets)`);
      }
      if (this.#headers.received > this.#opts.maxReceived) {
        // A loop: refusing now (rather than bouncing later) sends no backscatter;
        // the previous hop bounces to a sender it actually talked to.
        throw new SmtpError(554, '5.4.6', `Too many hops (${this.#headers.received} Received fields): mail loop?`);
      }
      const sendAs = this.#submission?.sendAs;
      if (sendAs) {
        // RFC 6409 §8.1 / §6.1: the MSA may refuse originator fields the user may not use.
        // Every address is checked, so fields cut at the capture limit cannot be checked: refused.
        if (this.#headers.truncated) {
          throw new SmtpError(552, '5.3.4', `From:, Sender: and Resent- fields too long (limit ${MAX_ORIGINATOR_BYTES} octets together)`);
        }
        const refused = originatorError((field) => this.#headers.get(field), sendAs);
        if (refused) throw refused;
      }
    } catch (e) {
      await this.#discard();
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
      this.#inbound?.verification.write(CRLF);
    }
    const results = this.#inbound ? await this.#checkInbound() : '';
    const signature = this.#signer ? await this.#signer.finish() : '';
    if (this.#signer?.errors.length) this.#opts.log.warn('dkim signing problem', { id: this.id, errors: this.#signer.errors });
    // Authentication-Results on top (RFC 8601 §5), then what a submission adds.
    const msg = await this.#writer.commit(results + signature + (this.#fixups ?? '') || undefined);
    this.#opts.onQueued(msg);
    return msg;
  }

  /**
   * Mail from outside, once its last byte is in: wait for the checks, apply
   * the inbound policy (throws SmtpError to refuse), mark quarantined
   * recipients, and return the Authentication-Results field to prepend.
   */
  async #checkInbound(): Promise<string> {
    const { policy, verification } = this.#inbound!;
    const env = this.envelope;
    const outcome = await verification.finish();
    // Whether DSNs may go to the reverse-path (backscatter.ts); persisted with the envelope at commit.
    env.outside = checkSender(env.sender, outcome);
    const decision = policy.decide(env.client?.ip ?? '', outcome, env.recipients);
    this.#opts.log.info('inbound', {
      id: this.id,
      ip: env.client?.ip,
      iprev: `${outcome.iprev.result}${outcome.iprev.names[0] ? ` ${outcome.iprev.names[0]}` : ''}`,
      spf: outcome.spf.result,
      helo: outcome.helo,
      dkim: outcome.dkim.map((d) => `${d.result}:${d.domain ?? '?'}`).join(' ') || 'none',
      dmarc: outcome.dmarc ? `${outcome.dmarc.result}:${outcome.dmarc.domain}${outcome.dmarc.policy ? ` p=${outcome.dmarc.policy}` : ''}` : 'none',
      arc: outcome.arc,
      senderVerified: env.outside.verified ?? 'no',
      incomplete: outcome.incomplete,
      action: decision.action,
      reasons: decision.reasons.length ? decision.reasons.join(', ') : undefined,
    });
    if (decision.action === 'reject') {
      await this.#writer.abort();
      throw decision.error!;
    }
    // The envelope is written at commit, so the folder is durable with the message.
    for (const i of decision.quarantine) env.recipients[i]!.folder = JUNK_FOLDER;
    if (outcome.sealError !== undefined) this.#opts.log.warn('forwarded mail not ARC-sealed', { id: this.id, reason: outcome.sealError });
    // RFC 8617 §5.1: the ARC set on top, above our Authentication-Results.
    return (outcome.arcSet ?? '') + outcome.header;
  }

  /** Forget the message; during a commit, wait for it and leave its outcome alone. */
  async abort(): Promise<void> {
    this.#ending ??= this.#discard();
    await this.#ending.catch(() => {});
  }

  #discard(): Promise<void> {
    this.#inbound?.verification.abort();
    return this.#writer.abort();
  }
}

/**
 * The DKIM signing domain of a submitted message: its (first) From: field's
 * first mailbox's domain, so the signature aligns for DMARC (RFC 7489 §3.1.1).
 * Undefined when there is none or the field does not parse.
 */
function fromDomain(value: string): string | undefined {
  const list = parseAddressList(value);
  return list.ok ? list.mailboxes[0]?.domain : undefined;
}

/**
 * Received: from <helo> ([ip]) by <us> with <protocol> id <queue id>
 * [for <rcpt>]; <date>   (RFC 5321 §4.4, RFC 5322 §3.6.7)
 * "for" is only given for a single recipient, so Bcc recipients are not disclosed.
 */
export function receivedHeader(hostname: string, id: string, m: NewMessage, date: Date): string {
  const t = m.trace;
  // RFC 5321 §4.1.3 address literal: IPv6 carries its tag.
  const literal = sanitize(t.ip.includes(':') ? `IPv6:${t.ip}` : t.ip);
  const from = `from ${sanitize(t.helo ?? 'unknown')} ([${literal}])`;
  const tls = t.tls ? `\r\n\t(using ${sanitize(t.tls)})` : '';
  const auth = t.user ? `\r\n\t(authenticated as ${sanitize(t.user)})` : '';
  const forClause = m.recipients.length === 1 ? `\r\n\tfor <${sanitize(m.recipients[0]!.original)}>` : '';
  return `Received: ${from}\r\n\tby ${hostname} (Tern) with ${sanitize(t.protocol)} id ${id}${tls}${auth}${forClause};\r\n\t${rfc5322Date(date)}\r\n`;
}

/**
 * Keep client-supplied text from breaking the header: no control character
 * at all (C0 incl. NUL, CR, LF, HT, VT, ESC; DEL; C1; U+2028/2029, which some
 * readers take as line breaks), no comment nesting games with ( ) \. Each
 * becomes "?". Callers validate first (EHLO syntax, addresses); this is the
 * last line, whatever a future caller passes. Cut at 255 characters without
 * splitting a surrogate pair.
 */
function sanitize(s: string): string {
  const clean = s.replace(/[\x00-\x1f\x7f-\x9f\u2028\u2029()\\]/g, '?');
  if (clean.length <= 255) return clean;
  const cut = clean.slice(0, 255);
  return /[\ud800-\udbff]$/.test(cut) ? cut.slice(0, -1) : cut;
}

let lastDate = { second: NaN, text: '' };

export function rfc5322Date(d: Date): string {
  // One format per second however many messages arrive in it.
  const second = Math.floor(d.getTime() / 1000);
  if (second === lastDate.second) return lastDate.text;
  // toUTCString is RFC 7231 IMF-fixdate: same as RFC 5322 but with "GMT".
  lastDate = { second, text: d.toUTCString().replace(/GMT$/, '+0000') };
  return lastDate.text;
}
