// POST /v1/messages: a message from the API goes through intake exactly as
// one from authenticated submission does (Received, Date and Message-ID
// fix-ups, DKIM signing, the send-as check of the originator fields), and
// is answered only once the spool has it durably (the SMTP 250).

import { randomUUID } from 'node:crypto';
import type { Intake } from '../intake/intake.ts';
import { parseHeaderSection } from '../intake/intake.ts';
import type { Directory, Target } from '../policy/directory.ts';
import { mayUseAddress, originatorError } from '../policy/senders.ts';
import { formatAddress, parseMailbox } from '../smtp/address.ts';
import { SmtpError } from '../smtp/reply.ts';
import type { Recipient } from '../spool/types.ts';
import type { ApiKeyRecord, EventStore } from '../store/store.ts';
import { ApiError, fieldError } from './problem.ts';
import type { SendRate } from '../policy/rate-limit.ts';
import MailComposer from 'nodemailer/lib/mail-composer';

type Mailbox = string | { name?: string; address: string };

/** What a 429 suggests: the sliding hour frees a place within a minute or so under steady use. */
const RATE_RETRY_AFTER_S = 60;

/** The request body (schemas.ts: sendBody): raw (from, to, raw) or built. */
export interface SendBody {
  from: Mailbox;
  to?: Mailbox[];
  cc?: Mailbox[];
  bcc?: Mailbox[];
  replyTo?: Mailbox;
  subject?: string;
  text?: string;
  html?: string;
  headers?: Record<string, string>;
  attachments?: { filename?: string; contentType?: string; content: string; contentId?: string }[];
  raw?: string;
  tags?: Record<string, string>;
}

const BUILT_ONLY = ['cc', 'bcc', 'replyTo', 'subject', 'text', 'html', 'headers', 'attachments'] as const;
/** Fields the composer writes itself: set through their own keys, never through `headers`. */
const COMPOSED_FIELDS = new Set(['from', 'to', 'cc', 'bcc', 'reply-to', 'subject', 'message-id', 'date', 'mime-version', 'content-type', 'content-transfer-encoding']);

export interface SendResult {
  id: string;
  messageId: string;
  recipients: { address: string; status: 'queued' }[];
}

export interface SenderOptions {
  intake: Intake;
  directory: Directory;
  store: EventStore;
  hostname: string;
  /** limits.messageSize and limits.recipients, read at each send (a reload changes them). */
  limits: () => { messageSize: number; recipients: number };
  /** submission.messagesPerHour: the limit of keys that set none (0: none). */
  messagesPerHour: () => number;
  /** The hourly counts, shared with SMTP submission's (keyed `apikey:NAME`). */
  rate: SendRate;
}

/** A key over its hourly limit: HTTP 429 (RFC 6585 §4), like submission's 450 4.7.1. */
export class RateLimited extends ApiError {
  readonly retryAfter: number;
  constructor(limit: number, retryAfter: number) {
    super(429, `Message rate limit exceeded (${limit} per hour for this key); try again later`);
    this.retryAfter = retryAfter;
  }
}

export class Sender {
  readonly #o: SenderOptions;
  constructor(o: SenderOptions) {
    this.#o = o;
  }

  async send(body: SendBody, key: ApiKeyRecord, ip: string, tls: boolean): Promise<SendResult> {
    const from = mailbox(addressOf(body.from), '/body/from');
    if (!mayUseAddress(from, key.sendAs)) throw new ApiError(403, `The key "${key.name}" may not send as <${from}>`, [{ path: '/body/from', message: 'outside the key\'s send-as' }]);
    if (body.raw !== undefined) {
      const mixed = BUILT_ONLY.find((k) => body[k] !== undefined);
      if (mixed) throw fieldError(400, `/body/${mixed}`, 'not allowed with raw (the raw form is from, to and raw)');
      if (typeof body.from !== 'string') throw fieldError(400, '/body/from', 'the raw form takes the envelope sender as a plain address');
      const to = body.to ?? [];
      const objectAt = to.findIndex((t) => typeof t !== 'string');
      if (objectAt >= 0) throw fieldError(400, `/body/to/${objectAt}`, 'the raw form takes envelope recipients as plain addresses');
      if (to.length === 0) throw fieldError(400, '/body/to', 'at least one recipient');
      return this.#submit(from, to.map((t, i) => ({ address: addressOf(t), path: `/body/to/${i}` })), toCrlf(body.raw), body.tags, key, ip, tls);
    }
    const rcpts = (['to', 'cc', 'bcc'] as const).flatMap((k) => (body[k] ?? []).map((t, i) => ({ address: addressOf(t), path: `/body/${k}/${i}` })));
    if (rcpts.length === 0) throw fieldError(400, '/body/to', 'at least one recipient in to, cc or bcc');
    if (body.text === undefined && body.html === undefined && body.attachments === undefined) throw fieldError(400, '/body/text', 'text, html or attachments is required');
    return this.#submit(from, rcpts, await this.#compose(body), body.tags, key, ip, tls);
  }

  /** The built form as an RFC 5322 message: nodemailer's composer, with no file or URL access (content comes only from the request). */
  async #compose(body: SendBody): Promise<Buffer> {
    const headers: Record<string, string> = {};
    for (const [name, value] of Object.entries(body.headers ?? {})) {
      if (COMPOSED_FIELDS.has(name.toLowerCase())) throw fieldError(400, `/body/headers/${name}`, `set ${name} through its own field, not headers`);
      headers[name] = value;
    }
    const attachments = (body.attachments ?? []).map((a, i) => {
      const content = Buffer.from(a.content, 'base64');
      // The pattern admits only base64 characters; this catches a wrong length (a truncated upload) or missing padding (RFC 4648 §3.2).
      if (a.content.length % 4 !== 0 || content.toString('base64') !== a.content) throw fieldError(400, `/body/attachments/${i}/content`, 'is not valid base64');
      return { filename: a.filename, contentType: a.contentType, content, cid: a.contentId };
    });
    const composer = new MailComposer({
      from: body.from,
      to: body.to,
      cc: body.cc,
      bcc: body.bcc,
      replyTo: body.replyTo,
      subject: body.subject,
      text: body.text,
      html: body.html,
      headers,
      attachments,
      messageId: `<${randomUUID()}@${this.#o.hostname}>`,
      disableFileAccess: true,
      disableUrlAccess: true,
    });
    return new Promise((resolve, reject) => composer.compile().build((e, m) => (e ? reject(e) : resolve(m))));
  }

  async #submit(from: string, to: { address: string; path: string }[], raw: Buffer, tags: Record<string, string> | undefined, key: ApiKeyRecord, ip: string, tls: boolean): Promise<SendResult> {
    const account = `apikey:${key.name}`;
    const { rate } = this.#o;
    const perHour = key.messagesPerHour ?? this.#o.messagesPerHour();
    // Counted before intake, as submission counts at MAIL: concurrent requests must not all pass; a refusal gives its place back.
    if (perHour > 0 && rate.count(account) >= perHour) throw new RateLimited(perHour, RATE_RETRY_AFTER_S);
    if (perHour > 0) rate.record(account);
    try {
      return await this.#submitCounted(from, to, raw, tags, key, ip, tls);
    } catch (e) {
      if (perHour > 0) rate.unrecord(account);
      throw e;
    }
  }

  async #submitCounted(from: string, to: { address: string; path: string }[], raw: Buffer, tags: Record<string, string> | undefined, key: ApiKeyRecord, ip: string, tls: boolean): Promise<SendResult> {
    const limits = this.#o.limits();
    if (to.length > limits.recipients) throw fieldError(400, '/body/to', `at most ${limits.recipients} recipients (limits.recipients)`);
    const recipients = this.#recipients(to);
    let message = raw;
    if (message.length > limits.messageSize) throw new ApiError(413, `The message is ${message.length} octets; the limit is ${limits.messageSize} (limits.messageSize)`);
    const fields = parseHeaderSection(message, false);
    let messageId = fields.find((f) => f.name.toLowerCase() === 'message-id')?.value.trim();
    if (messageId === undefined) {
      // Intake would add one (RFC 6409 §8.3), but the answer must name it: make it here.
      messageId = `<${randomUUID()}@${this.#o.hostname}>`;
      message = Buffer.concat([Buffer.from(`Message-ID: ${messageId}\r\n`, 'latin1'), message]);
    }
    // RFC 6531 when an address or the header section is UTF-8; 8BITMIME (RFC 6152) when any octet is 8-bit.
    const eightBit = /[\x80-\xff]/.test(message.toString('latin1'));
    const utf8 = /[^\x00-\x7f]/.test(from) || recipients.some((r) => /[^\x00-\x7f]/.test(r.address)) || fields.some((f) => /[^\x00-\x7f]/.test(f.value));
    const incoming = this.#o.intake.begin({
      sender: from,
      recipients,
      params: { smtputf8: utf8, body: eightBit ? '8BITMIME' : undefined },
      // RFC 3848 has no word for HTTP; the Received field says what it was, as the API key's name says who.
      trace: { ip, protocol: tls ? 'HTTPS' : 'HTTP', role: 'http', user: `apikey:${key.name}` },
      submission: { user: `apikey:${key.name}` },
      headerSection: true,
      source: 'api',
      // Metadata for events only: no X-Tern-Tags field, so the labels never reach recipients (or change the DKIM-signed bytes).
      tags: tags && Object.keys(tags).length > 0 ? tags : undefined,
    });
    incoming.write(message);
    try {
      const queued = await incoming.commit(message.subarray(-2).toString('latin1') === '\r\n', async (m) => {
        // The same rule as submission's data stage: every originator field must be the key's to use.
        const refused = originatorError((field) => m.originators(field), key.sendAs);
        if (refused) throw refused;
        return { fields: '', folders: [] };
      });
      this.#o.store.setMessageId(queued.envelope.id, messageId);
      return { id: queued.envelope.id, messageId, recipients: queued.envelope.recipients.map((r) => ({ address: r.address, status: 'queued' as const })) };
    } catch (e) {
      throw refusal(e);
    }
  }

  /** RCPT TO's rules: local addresses must exist (aliases expand), anything else is relayed for an authenticated key. */
  #recipients(to: { address: string; path: string }[]): Recipient[] {
    const out: Recipient[] = [];
    to.forEach(({ address: raw, path }) => {
      const address = mailbox(raw, path);
      const parsed = parseMailbox(address);
      let targets: Target[] = [{ kind: 'remote', address }];
      if (!parsed.literal && this.#o.directory.isLocalDomain(parsed.domain)) {
        const found = this.#o.directory.resolve(parsed.local, parsed.domain);
        if (!found || found.length === 0) throw fieldError(400, path, `<${address}>: no such user here`);
        targets = found;
      }
      for (const t of targets) {
        if (out.some((r) => r.address === t.address)) continue;
        out.push({ address: t.address, original: address, mailbox: t.kind === 'local' ? { domain: t.domain, localPart: t.localPart } : undefined });
      }
    });
    return out;
  }
}

function addressOf(m: Mailbox): string {
  return typeof m === 'string' ? m : m.address;
}

function mailbox(s: string, path: string): string {
  try {
    return formatAddress(parseMailbox(s.trim()));
  } catch (e) {
    throw fieldError(400, path, e instanceof SmtpError ? e.text : 'not an address');
  }
}

/** JSON writers end lines with \n: make every line end CRLF (RFC 5322 §2.1); a lone CR is refused, as in SMTP. */
function toCrlf(raw: string): Buffer {
  const text = raw.replace(/\r?\n/g, '\r\n');
  if (/\r(?!\n)/.test(text)) throw fieldError(400, '/body/raw', 'contains a CR not followed by LF');
  return Buffer.from(text, 'utf8');
}

/** Intake's SMTP refusals as HTTP: the sender rules 403, too large 413, the message's own faults 400, anything temporary 503. */
function refusal(e: unknown): unknown {
  if (!(e instanceof SmtpError)) return e;
  const text = `${e.enhanced} ${e.text}`;
  if (e.code >= 400 && e.code < 500) return new ApiError(503, `Temporarily refused: ${text}`);
  if (e.enhanced === '5.7.1') return new ApiError(403, text);
  if (e.enhanced === '5.3.4' || e.code === 552) return new ApiError(413, text);
  return new ApiError(400, text);
}
