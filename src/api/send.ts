// POST /v1/messages: a message from the API takes the path of one from
// authenticated submission, as a session authenticated as the API key
// (TernBackend.apiSession): the policy's mail, rcpt and data stages
// (send-as, the hourly limit, recipients, the sender fields, the plugins'
// hooks) and intake (Received, Date and Message-ID fix-ups, DKIM signing).
// It is answered only once the spool has it durably (the SMTP 250).

import { isAscii } from 'node:buffer';
import { randomUUID } from 'node:crypto';
import { parseHeaderSection } from '../intake/intake.ts';
import { mayUseAddress } from '../policy/senders.ts';
import { formatAddress, parseMailbox } from '../smtp/address.ts';
import { SmtpError } from '../smtp/reply.ts';
import type { ApiKeyRecord } from '../store/store.ts';
import { ApiError, fieldError } from './problem.ts';
import type { TernBackend } from '../policy/backend.ts';
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
  /**
   * 'suppressed': on the suppression list at the time of the request. It
   * stays in the message: the scheduler fails it without sending (with a
   * `suppressed` event), so the message's timeline tells the same.
   */
  recipients: { address: string; status: 'queued' | 'suppressed' }[];
}

export interface SenderOptions {
  hostname: string;
  /** limits.messageSize and limits.recipients, read at each send (a reload changes them). */
  limits: () => { messageSize: number; recipients: number };
  /** The backend in force (a reload replaces it): its policy stages and intake take the message. */
  backend: () => TernBackend;
  /** The suppression list (src/suppress/): a remote recipient on it is reported 'suppressed'. */
  suppressed: (address: string) => boolean;
}

/** A key over its hourly limit: HTTP 429 (RFC 6585 §4), for submission's 450 4.7.1. */
export class RateLimited extends ApiError {
  readonly retryAfter: number;
  constructor(detail: string, retryAfter: number) {
    super(429, detail);
    this.retryAfter = retryAfter;
  }
}

export class Sender {
  readonly #o: SenderOptions;
  #requests = 0;
  constructor(o: SenderOptions) {
    this.#o = o;
  }

  async send(body: SendBody, key: ApiKeyRecord, ip: string, tls: boolean): Promise<SendResult> {
    const from = mailbox(addressOf(body.from), '/body/from');
    // The submission stage checks this again at MAIL; asked first here so a refused sender costs no MIME composing.
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

  async #submit(from: string, to: { address: string; path: string }[], message: Buffer, tags: Record<string, string> | undefined, key: ApiKeyRecord, ip: string, tls: boolean): Promise<SendResult> {
    const limits = this.#o.limits();
    if (to.length > limits.recipients) throw fieldError(400, '/body/to', `at most ${limits.recipients} recipients (limits.recipients)`);
    const rcpts = to.map(({ address, path }) => ({ address: mailbox(address, path), path }));
    if (message.length > limits.messageSize) throw new ApiError(413, `The message is ${message.length} octets; the limit is ${limits.messageSize} (limits.messageSize)`);
    // RFC 6531 when an address or the header section is UTF-8; 8BITMIME (RFC 6152) when any octet is 8-bit.
    // An all-ASCII message (the usual one) needs no look at its fields.
    const ascii = isAscii(message);
    const eightBit = !ascii;
    const utf8 =
      /[^\x00-\x7f]/.test(from) || rcpts.some((r) => /[^\x00-\x7f]/.test(r.address)) || (!ascii && parseHeaderSection(message, false).some((f) => /[^\x00-\x7f]/.test(f.value)));
    const account = `apikey:${key.name}`;
    // The message takes the path of an authenticated submission: the policy's
    // mail, rcpt and data stages (send-as, the hourly limit, recipients, the
    // sender fields, the plugins) and intake. RFC 3848 has no word for HTTP;
    // the Received field says what it was, as the key's name says who.
    const session = this.#o.backend().apiSession(
      { id: `api-${++this.#requests}`, remoteAddress: ip, remotePort: 0, localPort: 0, role: 'http', tls, user: account },
      { address: account, sendAs: key.sendAs, messagesPerHour: key.messagesPerHour },
      // Metadata for events only: no X-Tern-Tags field, so the labels never reach recipients (or change the DKIM-signed bytes).
      { protocol: tls ? 'HTTPS' : 'HTTP', tags: tags && Object.keys(tags).length > 0 ? tags : undefined },
    );
    try {
      try {
        await session.mail(parseMailbox(from), { smtputf8: utf8, body: eightBit ? '8BITMIME' : undefined });
      } catch (e) {
        throw refusal(e, '/body/from');
      }
      for (const r of rcpts) {
        try {
          await session.rcpt(parseMailbox(r.address), {});
        } catch (e) {
          throw refusal(e, r.path);
        }
      }
      const sink = session.data({ protocol: tls ? 'HTTPS' : 'HTTP' });
      sink.write(message);
      let queued;
      try {
        queued = await sink.commit(message.subarray(-2).toString('latin1') === '\r\n');
      } catch (e) {
        throw refusal(e);
      }
      // No write of our own here: intake read the Message-ID into the envelope (or, for a message without one, made it: RFC 6409 §8.3), and the events store keeps it with the message's first event (batched).
      const suppressed = this.#o.suppressed;
      return {
        id: queued.id,
        messageId: queued.messageId ?? '',
        recipients: session.recipients().map((r) => ({ address: r.address, status: !r.mailbox && suppressed(r.address) ? ('suppressed' as const) : ('queued' as const) })),
      };
    } finally {
      session.reset();
    }
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

/**
 * The stages' SMTP refusals as HTTP: the hourly limit 429; the sender rules
 * 403; too large 413; a refused address (`path`: the field) or message
 * content 400; anything else temporary 503. Not an SmtpError: a fault, as is.
 */
function refusal(e: unknown, path?: string): unknown {
  if (!(e instanceof SmtpError)) return e;
  const text = `${e.enhanced} ${e.text}`;
  if (e.code === 450 && e.enhanced === '4.7.1' && path === '/body/from') return new RateLimited(text, RATE_RETRY_AFTER_S);
  if (path !== undefined && path !== '/body/from' && (e.code >= 500 || e.enhanced === '4.7.1')) return fieldError(400, path, e.text);
  if (e.code >= 400 && e.code < 500) return new ApiError(503, `Temporarily refused: ${text}`);
  if (e.enhanced === '5.7.1') return path ? new ApiError(403, text, [{ path, message: e.text }]) : new ApiError(403, text);
  if (e.enhanced === '5.3.4' || e.code === 552) return new ApiError(413, text);
  return new ApiError(400, text);
}
