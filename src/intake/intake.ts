// Intake: the one entry for every new message (SMTP today; the HTTP API,
// bounces and forwards later). It assigns the queue id, prepends our
// Received header (RFC 5321 §4.4), streams the message into the spool and,
// once the spool says it is durable, hands it to the scheduler.
//
// Every message loses Authentication-Results fields that claim our
// authserv-id (RFC 8601 §5, ar-filter.ts). Mail from outside (NewMessage.
// authenticate) is also checked as it streams (SPF, DKIM, DMARC, ARC,
// iprev: authenticate.ts), and its Authentication-Results field is
// prepended at commit.
//
// Intake decides nothing about a message beyond its own limits (header
// size, hops): at commit, once the last byte is in and the checks have
// finished, the caller's data stage (the policy, src/policy/data.ts) reads
// the facts (ReadMessage) and refuses the message or says what to add to
// it (DataOutcome); intake applies that, signs and commits. What fails
// underneath (the disk) becomes an SmtpError here, the one place that
// knows it was I/O: a full disk or quota 452 4.3.1, anything else
// 451 4.3.0 (an unknown fault is never a permanent refusal).

import type { Spool, SpoolWriter } from '../spool/spool.ts';
import type { Envelope, MessageSource, QueuedMessage, Recipient } from '../spool/types.ts';
import type { MailParams } from '../smtp/params.ts';
import type { Logger } from '../util/log.ts';
import { HeaderScanner } from './headers.ts';
import { parseAddressList } from '../smtp/address-list.ts';
import { SmtpError } from '../smtp/reply.ts';
import { DkimSigner, type DkimKeySource } from './dkim.ts';
import { AuthResultsFilter } from './ar-filter.ts';
import type { ArcSealKey, AuthOutcome, InboundVerifier, Verification } from './authenticate.ts';
import { countInboundResults } from './inbound-metrics.ts';
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
   * network): fixed up per RFC 6409 §8 and DKIM-signed.
   */
  submission?: { user?: string | undefined } | undefined;
  /**
   * Mail from outside (the MX role: not authenticated, not a trusted
   * network): run the inbound checks (their results: ReadMessage.auth).
   */
  authenticate?: boolean | undefined;
  /** Keep the header section (up to MAX_HEADER_SECTION) for the data stage: ReadMessage.headerFields. */
  headerSection?: boolean | undefined;
  /** How it came, when the listener role does not say (the HTTP API): Envelope.source. */
  source?: MessageSource | undefined;
  /** The API's tags: Envelope.tags. */
  tags?: Record<string, string> | undefined;
}

/** Sender authentication of mail from outside. */
export interface InboundChecks {
  verifier: InboundVerifier;
}

/** One header field as received (as src/policy/data.ts shows it). */
export interface HeaderField {
  name: string;
  value: string;
}

/**
 * What the data stage reads of a message once its last byte is in: the
 * facts, no verdict. `size` and the header section are of the client's
 * message as stored (forged Authentication-Results removed, our Received
 * field not counted).
 */
export interface ReadMessage {
  readonly id: string;
  readonly envelope: Envelope;
  readonly size: number;
  /** The header section has ended (or the message has). */
  readonly headerDone: boolean;
  /** The header section, field by field (NewMessage.headerSection; otherwise empty). */
  headerFields(): HeaderField[];
  /** False when the header section outgrew MAX_HEADER_SECTION: headerFields() has the fields before the cut. */
  readonly headerComplete: boolean;
  /** Unfolded values of an originator field (from, sender, resent-from, resent-sender), kept whole up to MAX_ORIGINATOR_BYTES. */
  originators(field: string): string[];
  /** The originator values went over MAX_ORIGINATOR_BYTES and were cut. */
  readonly originatorsTruncated: boolean;
  /** Mail from outside: the results of the inbound checks (set at commit, before the data stage). */
  readonly auth: AuthOutcome | undefined;
}

/** What the data stage decided for a message it let through. */
export interface DataOutcome {
  /** Header fields (CRLF-terminated) to prepend, above our Authentication-Results. */
  fields: string;
  /** Recipients (indices into the envelope's) delivered into a Maildir folder instead of the inbox (quarantine: Junk). */
  folders: readonly (readonly [recipient: number, folder: string])[];
}

/**
 * The policy's data stage, run at commit after the last byte and the
 * inbound checks, before signing and the spool commit. Throws (an
 * SmtpError) to refuse the message.
 */
export type DataStage = (m: ReadMessage) => Promise<DataOutcome>;

export interface IntakeOptions {
  spool: Spool;
  hostname: string;
  /** Called after commit, with the durable message. */
  onQueued: (msg: QueuedMessage) => void;
  log: Logger;
  /** Received fields allowed before a message is refused as looping (RFC 5321 §6.3). */
  maxReceived: number;
  /** Signing keys by domain; absent: nothing is signed. */
  dkim?: DkimKeySource | undefined;
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
      requireTls: m.params.requireTls || undefined,
      // Mail from outside: no DSN to its sender unless verified (backscatter.ts); #finishChecks records the result when the checks run.
      outside: m.authenticate ? CHECKS_DISABLED : undefined,
      client: { ip: m.trace.ip, helo: m.trace.helo, role: m.trace.role, tls: m.trace.tls },
      source: m.source,
      tags: m.tags,
    };
    const writer = this.#opts.spool.create(envelope);
    const inbound = m.authenticate ? this.#opts.inbound : undefined;
    const seal = inbound ? this.#arcKey(id, m.recipients) : undefined;
    const verification = inbound?.verifier.begin({ ip: m.trace.ip, helo: m.trace.helo, sender: m.sender }, seal);
    const incoming = new IncomingMessage(writer, this.#opts, { submission: m.submission, verification, headerSection: m.headerSection });
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
/** The header section kept for the data stage (NewMessage.headerSection); the same bound as the verifier's. */
export const MAX_HEADER_SECTION = 256 * 1024;

/** The disk is full or the quota used up: RFC 5321 §4.2.2 452, RFC 3463 4.3.1 (mail system full). */
const NO_STORAGE = new Set(['ENOSPC', 'EDQUOT']);

export class IncomingMessage implements ReadMessage {
  readonly #writer: SpoolWriter;
  readonly #opts: IntakeOptions;
  readonly #headers = new HeaderScanner();
  readonly #submission: NewMessage['submission'];
  /** Client octets stored so far (after the A-R filter). */
  #size = 0;
  /** Who else reads the client's octets as they arrive (the data stage's body feeds). */
  #watch: ((chunk: Buffer) => void) | null = null;
  /** The header section kept for the data stage; null when not asked for, or once complete or cut. */
  #section: Buffer[] | null = null;
  #sectionBytes = 0;
  #sectionChunks: Buffer[] = [];
  #sectionCut = false;
  #auth: AuthOutcome | undefined;
  /** Submission: header chunks held for the signer until the header section ends. */
  #held: Buffer[] | null = null;
  #heldBytes = 0;
  #signer: DkimSigner | null = null;
  #fixups: string | null = null;
  readonly #filter: AuthResultsFilter;
  /** Mail from outside: the running checks. */
  readonly #verification: Verification | undefined;
  /** Header section octets fed to the verifier so far; past MAX_VERIFIED_HEADER it is stopped. */
  #verifiedHeader = 0;
  #headerTooBig = false;
  /** The commit, or the abort: set by whichever comes first. */
  #ending: Promise<unknown> | null = null;

  constructor(
    writer: SpoolWriter,
    opts: IntakeOptions,
    m: { submission?: NewMessage['submission']; verification?: Verification | undefined; headerSection?: boolean | undefined },
  ) {
    this.#writer = writer;
    this.#opts = opts;
    this.#submission = m.submission;
    this.#verification = m.verification;
    this.#filter = new AuthResultsFilter(opts.authservId ?? opts.hostname);
    if (m.submission && opts.dkim) this.#held = [];
    if (m.headerSection) this.#section = this.#sectionChunks;
  }
  get id(): string {
    return this.#writer.envelope.id;
  }
  get envelope(): Envelope {
    return this.#writer.envelope;
  }
  get size(): number {
    return this.#size;
  }
  get headerDone(): boolean {
    return this.#headers.done || this.#ending !== null;
  }
  get headerComplete(): boolean {
    return !this.#sectionCut;
  }
  get originatorsTruncated(): boolean {
    return this.#headers.truncated;
  }
  get auth(): AuthOutcome | undefined {
    return this.#auth;
  }
  originators(field: string): string[] {
    return this.#headers.get(field);
  }
  headerFields(): HeaderField[] {
    return parseHeaderSection(Buffer.concat(this.#sectionChunks), this.#sectionCut);
  }

  /** Also give the client's octets (as stored, after the A-R filter) to `feed`, as they arrive. Before the first write. */
  watch(feed: (chunk: Buffer) => void): void {
    this.#watch = feed;
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
    for (const part of this.#filter.push(chunk)) more = this.#client(part);
    return more;
  }

  /** A piece of the client's message, past the filter: kept for the data stage as asked, then stored. */
  #client(part: Buffer): boolean {
    this.#size += part.length;
    this.#watch?.(part);
    const section = this.#section;
    if (section) {
      if (this.#sectionBytes + part.length > MAX_HEADER_SECTION) {
        section.push(part.subarray(0, MAX_HEADER_SECTION - this.#sectionBytes));
        this.#sectionCut = true;
        this.#section = null;
      } else {
        section.push(part);
        this.#sectionBytes += part.length;
      }
    }
    const more = this.#store(part);
    // The part that ends the header section is the last one kept.
    if (this.#headers.done) this.#section = null;
    return more;
  }

  #verify(chunk: Buffer): void {
    const v = this.#verification;
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
   * BDAT) adds the CRLF that RFC 5322 §2.1 requires at the end. `stage`, the
   * policy's data stage, may refuse the message (its SmtpError is the
   * reply) or say what to add to it. Any other failure rejects with an
   * SmtpError too (see the top of this file).
   */
  commit(endsWithLineBreak: boolean, stage?: DataStage): Promise<QueuedMessage> {
    // One of commit() and abort() decides, as in SpoolWriter: an abort that
    // comes during the commit (the client reset after its final dot) waits
    // for it instead of pulling the message out from under it.
    if (this.#ending) return Promise.reject(new Error('IncomingMessage: commit after commit or abort'));
    // Whatever fails (a limit, the data stage, signing, the spool), the
    // spool writer is left aborted, never open.
    const commit = this.#commit(endsWithLineBreak, stage).catch(async (e: unknown) => {
      await this.#discard();
      throw this.#refusal(e);
    });
    this.#ending = commit;
    return commit;
  }

  async #commit(endsWithLineBreak: boolean, stage: DataStage | undefined): Promise<QueuedMessage> {
    // Whatever the filter still holds (a message that ended inside its header section).
    for (const part of this.#filter.end()) this.#client(part);
    this.#section = null;
    if (this.#headerTooBig) {
      throw new SmtpError(552, '5.3.4', `Message header section too large (limit ${MAX_VERIFIED_HEADER} octets)`);
    }
    if (this.#headers.received > this.#opts.maxReceived) {
      // A loop: refusing now (rather than bouncing later) sends no backscatter;
      // the previous hop bounces to a sender it actually talked to.
      throw new SmtpError(554, '5.4.6', `Too many hops (${this.#headers.received} Received fields): mail loop?`);
    }
    if (this.#submission) {
      // A message without a body never ended its header section: decide now.
      if (this.#held) this.#startSigning();
      this.#fixups ??= this.#fixupFields();
    }
    if (!endsWithLineBreak) {
      this.#writer.write(CRLF);
      this.#signer?.write(CRLF);
      this.#verification?.write(CRLF);
    }
    const results = this.#verification ? await this.#finishChecks(this.#verification) : '';
    const decided = stage ? await stage(this) : undefined;
    // The envelope is written at commit, so the folder is durable with the message.
    for (const [i, folder] of decided?.folders ?? []) {
      const r = this.envelope.recipients[i];
      if (r?.mailbox) r.folder = folder;
    }
    // For display and search (the events store, `tern queue show`): what the message says it is.
    const subject = this.#headers.get('subject')[0];
    if (subject) this.envelope.subject = subject;
    const messageId = this.#headers.get('message-id')[0] ?? /^Message-ID: (.*)\r$/m.exec(this.#fixups ?? '')?.[1];
    if (messageId) this.envelope.messageId = messageId;
    // RFC 8689 §3: "TLS-Required: No" asks relays to ignore recipient TLS policies; REQUIRETLS on MAIL FROM overrides it (§4.2.2).
    const tlsRequired = this.#headers.get('tls-required')[0];
    if (tlsRequired !== undefined && /^[ \t]*no[ \t]*(\r?\n)?$/i.test(tlsRequired) && !this.envelope.requireTls) this.envelope.tlsOptional = true;
    const signature = this.#signer ? await this.#signer.finish() : '';
    if (this.#signer?.errors.length) this.#opts.log.warn('dkim signing problem', { id: this.id, errors: this.#signer.errors });
    // The data stage's fields on top, then Authentication-Results (RFC 8601 §5), then what a submission adds.
    const msg = await this.#writer.commit((decided?.fields ?? '') + results + signature + (this.#fixups ?? '') || undefined);
    this.#opts.onQueued(msg);
    return msg;
  }

  /**
   * Mail from outside, once its last byte is in: wait for the checks,
   * record on the envelope whether its sender was verified (DSNs go only to
   * a verified one, backscatter.ts; persisted with it at commit), keep the
   * results for the data stage, and return the fields to prepend.
   */
  async #finishChecks(verification: Verification): Promise<string> {
    const outcome = await verification.finish();
    countInboundResults(outcome);
    this.#auth = outcome;
    this.envelope.outside = checkSender(this.envelope.sender, outcome);
    if (outcome.sealError !== undefined) this.#opts.log.warn('forwarded mail not ARC-sealed', { id: this.id, reason: outcome.sealError });
    // RFC 8617 §5.1: the ARC set on top, above our Authentication-Results.
    return (outcome.arcSet ?? '') + outcome.header;
  }

  /** Why the commit failed, as the reply to give: a verdict as it is; a fault as a temporary failure. */
  #refusal(e: unknown): SmtpError {
    if (e instanceof SmtpError) return e;
    const code = errnoCode(e);
    // An I/O error is the spool's; anything else, a fault in a check or in signing.
    this.#opts.log.error(code !== undefined ? 'spool commit failed' : 'message not queued', { id: this.id, error: e });
    if (code !== undefined && NO_STORAGE.has(code)) return new SmtpError(452, '4.3.1', 'Insufficient system storage', { cause: e });
    return new SmtpError(451, '4.3.0', 'Could not queue the message; try again later', { cause: e });
  }

  /** Forget the message; during a commit, wait for it and leave its outcome alone. */
  async abort(): Promise<void> {
    this.#ending ??= this.#discard();
    await this.#ending.catch(() => {});
  }

  #discard(): Promise<void> {
    this.#verification?.abort();
    return this.#writer.abort();
  }
}

/** The errno code (ENOSPC, EIO…) of a Node.js system error, or of one it wraps. */
function errnoCode(e: unknown): string | undefined {
  for (let cur = e, depth = 0; cur && typeof cur === 'object' && depth < 5; cur = (cur as { cause?: unknown }).cause, depth++) {
    const code = (cur as { code?: unknown }).code;
    if (typeof code === 'string') return code;
  }
  return undefined;
}

/**
 * The fields of a header section (up to its blank line), unfolded (RFC 5322
 * §2.2.3) and read as UTF-8 (RFC 6532), as HeaderScanner reads the
 * originator fields. A line that is not a field (no colon) is skipped. `cut`:
 * the section was cut off, so its last field may be incomplete and is left out.
 */
export function parseHeaderSection(raw: Buffer, cut: boolean): HeaderField[] {
  const text = raw.toString('latin1');
  const end = text.startsWith('\r\n') ? 0 : text.indexOf('\r\n\r\n');
  const lines = (end === -1 ? text : text.slice(0, end)).split('\r\n');
  const fields: { name: string; value: string }[] = [];
  for (const line of lines) {
    if (line.startsWith(' ') || line.startsWith('\t')) {
      const last = fields.at(-1);
      if (last) last.value += line;
      continue;
    }
    const colon = line.indexOf(':');
    const name = colon > 0 ? line.slice(0, colon).replace(/[ \t]+$/, '') : '';
    if (!name || /[^\x21-\x7e]/.test(name)) {
      fields.push({ name: '', value: '' }); // not a field: its continuation lines are not anyone's
      continue;
    }
    fields.push({ name, value: line.slice(colon + 1) });
  }
  // Cut before its blank line: the last field may have lost its end.
  if (end === -1 && cut) fields.pop();
  return fields.filter((f) => f.name !== '').map((f) => ({ name: f.name, value: Buffer.from(f.value, 'latin1').toString('utf8').trim() }));
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
